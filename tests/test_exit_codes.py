"""Exit codes never lie (issue 11, §4): usage errors are 2, Ctrl-C is 130 whenever it comes, no
message says Python's None, and a lock timeout says what kind of lock it waited for."""

from __future__ import annotations

import signal
import time
import zoneinfo

import psycopg
import pytest

from tests.helpers import etlctl_process, finished, run_process


@pytest.mark.parametrize("ref", ["³", "①", "７", "٣", "²³"])
def test_a_job_written_with_digits_other_than_0_to_9_is_a_usage_error(db, cli, ref):
    """Python's str.isdigit() is True for all of these, and int() reads '７' as 7."""
    db.job("Jira", status=finished())
    for command in (["status", ref], ["reset", ref], ["why", ref], ["check", ref]):
        result = cli(*command)
        assert (result.exit_code, result.stdout, result.stderr) == (
            2, "", f"etlctl: invalid JOB {ref!r}: a job id is written with the digits 0-9\n"), command


def test_a_name_with_such_digits_is_still_a_name(db, cli):
    job = db.job("Jira ①", db.tenant("acme"), status=finished())
    assert cli("status", "jira ①", "--json").json()["id"] == job


@pytest.mark.parametrize("ref", ["2147483648", "99999999999999999999"])
def test_a_job_id_past_the_column_range_is_a_usage_error(db, cli, ref):
    result = cli("status", ref)
    assert (result.exit_code, result.stderr) == (2, f"etlctl: job id {ref} is out of range (at most 2147483647)\n")
    assert cli("status", "2147483647").exit_code == 5  # the largest id is an id: just not there


def _zone_python_has_and_postgres_refuses(db) -> str | None:
    known = {r["name"] for r in db.sql("SELECT name FROM pg_timezone_names")}
    for name in ["posixrules", "right/UTC", "right/America/New_York", "posix/UTC", "Factory",
                 *sorted(zoneinfo.available_timezones())]:
        if name in known:
            continue
        try:
            zoneinfo.ZoneInfo(name)
        except Exception:
            continue
        try:
            db.sql("SET TimeZone = %s" % psycopg.sql.quote(name))
        except psycopg.Error:
            return name
        finally:
            db.sql("RESET TimeZone")
    return None


def test_a_zone_the_server_refuses_is_a_usage_error_not_an_unreachable_server(db, cli):
    zone = _zone_python_has_and_postgres_refuses(db)
    if zone is None:
        pytest.skip("every zone this Python knows, the server knows too")
    result = cli("--db-timezone", zone, "status")
    assert (result.exit_code, result.stderr) == (
        2, f"etlctl: invalid --db-timezone {zone!r}: the database server does not know that zone "
           "(its names: SELECT name FROM pg_timezone_names)\n")
    env = cli("status", env={"ETLCTL_DB_TIMEZONE": zone})
    assert env.exit_code == 2


@pytest.mark.parametrize("value", ["1", "1.9", "500ms"])
def test_a_connect_timeout_below_libpqs_minimum_is_refused(db, cli, value):
    result = cli("status", "--connect-timeout", value)
    shown = {"1": "1", "1.9": "1.9", "500ms": "0.5"}[value]
    assert (result.exit_code, result.stderr) == (
        2, f"etlctl: invalid --connect-timeout {shown}s: libpq waits at least 2s to connect (it reads less as 2s)\n")
    assert cli("status", "--connect-timeout", "2").exit_code == 0


def test_no_message_says_none(db, cli):
    """{"overall": null} passes the table's CHECK; it used to read "job 7 is None, not RUNNING"."""
    job = db.value("INSERT INTO etl_jobs (job_name, tenant_id, status) VALUES ('Jira', %s, "
                   "'{\"overall\": null, \"steps\": {}}') RETURNING id", db.tenant("acme"))
    for args, code in ((["complete", job], 4), (["step", job, "x", "extraction", "running"], 2),
                       (["reset", job], 4), (["wait-and-reset", job], 4), (["why", job], 0),
                       (["status", job], 0), (["check", job], 3), (["schedule-next", "--dry-run", "--explain"], 0),
                       (["doctor"], 3), (["sweep", "-v"], 0)):
        result = cli(*args)
        assert result.exit_code == code, (args, result.stderr)
        assert "None" not in result.stdout + result.stderr, (args, result.stdout + result.stderr)
    assert cli("complete", job).stderr == (
        f"etlctl: job {job} is in no state (its status has no overall), not RUNNING; nothing changed\n")
    assert cli("reset", job).stderr == (
        f"etlctl: job {job} (Jira, tenant acme) is in no state (its status has no overall), not FINISHED: "
        "nothing to reset (--force overrides)\n")


# --- lock waits ------------------------------------------------------------------------------------


def test_a_table_lock_wait_is_not_called_a_row_lock(db, cli):
    job = db.job("Jira", status=finished())
    with psycopg.connect(db.dsn) as holder:
        holder.execute("LOCK TABLE etl_jobs IN ACCESS EXCLUSIVE MODE")
        result = cli("reset", job, "--lock-timeout", "200ms")
        holder.rollback()
    assert (result.exit_code, result.stderr) == (
        7, "etlctl: the database is busy: lock timeout: another session held a lock this command waits for (a table "
           "lock, or an advisory lock such as another `etlctl db init`'s) longer than --lock-timeout; nothing was "
           "changed, try again\n")


def test_an_advisory_lock_wait_is_not_called_a_row_lock(db, cli):
    with psycopg.connect(db.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext('etlctl.db_init'))")  # another `db init` at work
        result = cli("db", "init", "--lock-timeout", "200ms")
        holder.execute("SELECT pg_advisory_unlock(hashtext('etlctl.db_init'))")
    assert result.exit_code == 7
    assert "a table lock, or an advisory lock such as another `etlctl db init`'s" in result.stderr
    assert "row" not in result.stderr


def test_a_row_lock_wait_names_the_table(db):
    job = db.job("Jira", status=finished())
    with psycopg.connect(db.dsn) as holder:
        holder.execute("SELECT 1 FROM etl_jobs WHERE id = %s FOR UPDATE", (job,))
        result = run_process(["reset", job, "--lock-timeout", "200ms"], db.dsn)
        holder.rollback()
    assert (result.exit_code, result.stderr) == (
        7, "etlctl: the database is busy: lock timeout: another session held a row of etl_jobs locked longer than "
           "--lock-timeout; nothing was changed, try again\n")


# --- Ctrl-C at any moment ------------------------------------------------------------------------------

INTERRUPTED = "etlctl: interrupted (SIGINT); nothing half-written\n"


def _interrupt_at(args, dsn: str, offset: float, hold_until_etlctl: bool):
    """etlctl as a process, SIGINT `offset` seconds after it was started. With `hold_until_etlctl`, the signal
    is held blocked (as a launcher can) until etlctl's first line takes it over: the interpreter's own first
    milliseconds are Python's, not etlctl's (see etlctl/__main__.py)."""
    block = (lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})) if hold_until_etlctl else None
    proc = etlctl_process(args, dsn, preexec_fn=block)
    time.sleep(offset)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_a_ctrl_c_at_any_moment_exits_130_with_one_line(db):
    """From the first milliseconds (importing click) to the end (printing, leaving): 130 and one line, or, when
    the command had finished before the signal came, its own complete result. Never a traceback, never -2."""
    db.job("Jira", db.tenant("acme"), status=finished())
    complete = run_process(["status"], db.dsn)
    assert complete.exit_code == 0
    outcomes = {"interrupted": 0, "finished": 0}
    offsets = [n * 0.004 for n in range(30)] + [0.12 + n * 0.02 for n in range(15)]
    for offset in offsets:
        code, out, err = _interrupt_at(["status"], db.dsn, offset, hold_until_etlctl=True)
        if code == 130:
            assert err.endswith(INTERRUPTED) and err.count("\n") == 1 + err.count("using the embedded"), (offset, err)
            outcomes["interrupted"] += 1
        else:
            assert (code, out, err) == (0, complete.stdout, ""), (offset, code, err)
            outcomes["finished"] += 1
    assert outcomes["interrupted"] >= 20, outcomes  # most offsets land while it runs


def _with_stdout(args, dsn, stdout_fd: int):
    """etlctl as a process whose stdout is ``stdout_fd``; its stderr and exit code."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETLCTL_", "PG"))}
    done = subprocess.run([sys.executable, "-m", "etlctl", *map(str, args)], env={**env, "ETLCTL_DSN": dsn},
                          stdout=stdout_fd, stderr=subprocess.PIPE, text=True, timeout=60)
    return done.returncode, done.stderr


def _closed_pipe() -> int:
    """A pipe whose reader has already left (`etlctl status | head -1` once head has its line)."""
    import os

    read, write = os.pipe()
    os.close(read)
    return write


def test_a_reader_that_leaves_early_is_no_error_and_doctor_keeps_its_finding(db):
    import os

    acme = db.tenant("acme")
    for n in range(30):
        db.job(f"Jira {n}", acme)
    pipe = _closed_pipe()
    try:
        assert _with_stdout(["status"], db.dsn, pipe) == (0, "")
        assert _with_stdout(["status", "--json"], db.dsn, pipe) == (0, "")
        assert _with_stdout(["doctor"], db.dsn, pipe) == (0, "")
        db.job("Gave up", acme, status={"overall": "FINISHED", "token": "t", "reset_stage": "gave_up", "steps": {}})
        assert _with_stdout(["doctor"], db.dsn, pipe) == (3, "")  # the exit code is the finding, not the pipe
    finally:
        os.close(pipe)


def test_a_full_disk_is_one_clear_line_and_exit_1(db):
    import os

    db.job("Jira", db.tenant("acme"))
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        assert _with_stdout(["status"], db.dsn, full) == (
            1, "etlctl: cannot write the output to stdout: No space left on device; what was printed before is "
               "incomplete\n")
    finally:
        os.close(full)
