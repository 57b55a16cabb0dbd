"""`etlctl run` as real processes: woken by a NOTIFY, SIGTERM after the statement in flight, SIGINT,
SIGHUP, a database restart while it sleeps, and three instances over hundreds of runs with no
double action (checked from the audit log), one of them killed with SIGKILL and started again."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
import uuid

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.helpers import Cli, JIRA5_STEPS, TestDatabase, admin_connect, etlctl_process, running, start_server, steps, wait_until

FAST = {"ETLCTL_DELAY": "0.05", "ETLCTL_BACKOFF": "0.05,0.1,0.2,0.4", "ETLCTL_COOLDOWN": "0.05"}
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d "


def start_run(dsn: str, *args: str, env: dict | None = None):
    return etlctl_process(["run", *args], dsn, {**FAST, **(env or {})})


def stop(proc, signum=signal.SIGTERM) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signum)
    return proc.communicate(timeout=60)


def passes(db, pid: int) -> int:
    return db.value("SELECT coalesce(max(passes), 0) FROM etlctl.runners WHERE pid = %s", pid) or 0


def sessions(db) -> set[int]:
    return {r["pid"] for r in db.sql("SELECT pid FROM pg_stat_activity WHERE application_name = 'etlctl' "
                                     "AND datname = current_database() AND pid <> pg_backend_pid()")}


def test_a_notify_wakes_it_and_each_action_is_one_line(db, cli, acme):
    job = db.job("Jira", acme, db.integration(acme), status=running(JIRA5_STEPS))
    proc = start_run(db.dsn, "--max-sleep", "1d")  # nothing due: only a NOTIFY can wake it within the test
    try:
        assert wait_until(lambda: passes(db, proc.pid) >= 1, timeout=30)
        assert cli("complete", job, "--delay", "0").exit_code == 0
        assert wait_until(lambda: db.status(job)["overall"] == "READY", timeout=30)
    finally:
        out, err = stop(proc)
    assert proc.returncode == 143, err
    label = f"job {job} (Jira, tenant acme)"
    assert [re.sub(STAMP, "", line) for line in out.splitlines()] == [
        f"{label}: cooldown: check 1 of 5: all steps finished; reset at {line_time(out, 0)} (now)",
        f"{label}: reset: READY; next run at {line_time(out, 1)} (in 6h)",
    ]
    assert all(re.match(STAMP, line) for line in out.splitlines() + err.splitlines())
    notes = [re.sub(STAMP, "", line) for line in err.splitlines()]
    assert notes[0] == (f"etlctl: run started on {socket.gethostname()} (pid {proc.pid}): waits at most 1d; reset "
                        "flow: delay 50ms, backoff 50ms,100ms,200ms,400ms, cool-down 50ms; no broker (messages wait "
                        "in the outbox)")
    assert notes[1:] == ["etlctl: terminated (SIGTERM); nothing half-written"]


def test_json_lines_and_the_health_file(db, cli, acme, tmp_path):
    job = db.job("Jira", acme, db.integration(acme), status=running(JIRA5_STEPS))
    health = tmp_path / "healthy"
    proc = start_run(db.dsn, "--max-sleep", "1d", "--json", "--health-file", health)
    try:
        assert wait_until(lambda: passes(db, proc.pid) >= 1, timeout=30)
        assert health.exists()  # touched after the first pass
        first = health.stat().st_mtime_ns
        assert cli("complete", job, "--delay", "0").exit_code == 0
        assert wait_until(lambda: db.status(job)["overall"] == "READY", timeout=30)
        assert wait_until(lambda: health.stat().st_mtime_ns > first, timeout=30)  # and after each pass since
    finally:
        out, err = stop(proc)
    assert proc.returncode == 143, err
    records = [json.loads(line) for line in out.splitlines()]  # one JSON object per line, nothing else
    assert [(r["event"], r["job_id"], r["action"], r["applied"]) for r in records] == [
        ("reset_flow", job, "cooldown", True), ("reset_flow", job, "reset", True)]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", r["at"]) for r in records)
    started, last = err.splitlines()[0], err.splitlines()[-1]
    assert json.loads(started)["note"].startswith(f"etlctl: run started on {socket.gethostname()} (pid {proc.pid}): ")
    assert json.loads(started)["note"].endswith(f"; health file {health}")
    assert last == "etlctl: terminated (SIGTERM); nothing half-written"  # the final error line stays text


def test_a_health_file_that_cannot_be_touched_is_one_line_and_exit_1_before_any_action(db, acme, tmp_path):
    due = db.job("Jira", acme, db.integration(acme))  # READY, next_run NULL: a pass would start it
    proc = start_run(db.dsn, "--health-file", tmp_path / "missing" / "healthy")
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (1, "")
    assert [re.sub(STAMP, "", line) for line in err.splitlines()] == [
        f"etlctl: cannot touch --health-file {tmp_path}/missing/healthy: no folder {tmp_path}/missing"]
    assert db.status(due)["overall"] == "READY" and db.audit(due) == []


def test_a_reader_of_its_output_that_goes_away_stops_it_with_exit_1_not_0(db, acme):
    """exit 0 would tell systemd (Restart=on-failure) the service is done, and nothing would act any more."""
    db.job("Jira", acme, db.integration(acme))  # due: the first pass starts it, and says so on stdout
    proc = start_run(db.dsn)
    proc.stdout.close()  # the reader goes away before the first line
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert re.sub(STAMP, "", err.splitlines()[-1]) == (
        "etlctl: the reader of its output went away (a closed pipe): `etlctl run` stops rather than act unseen; "
        "its supervisor (systemd's Restart=on-failure) starts it again")


def line_time(out: str, n: int) -> str:
    """The time a logged line shows (the reset's, or the next run's), whatever the clock said then."""
    found = re.findall(r"(?:reset at|next run at) (\S+(?: \S+)?) \(", out.splitlines()[n])
    return found[0]


def test_sigterm_lets_the_statement_in_flight_finish(db, cli, acme):
    job = db.job("Jira", acme, db.integration(acme), status=running(JIRA5_STEPS))
    proc = start_run(db.dsn, "--max-sleep", "1d", "--lock-timeout", "1m")
    holder = psycopg.connect(db.dsn, autocommit=True)
    try:
        assert wait_until(lambda: passes(db, proc.pid) == 1, timeout=30)
        holder.execute("BEGIN")
        holder.execute("SELECT 1 FROM etlctl.runners FOR UPDATE")  # its next heartbeat will wait for this lock
        assert cli("complete", job, "--delay", "0").exit_code == 0  # wakes it: it acts, then waits
        holder_pid = holder.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert wait_until(lambda: db.value(  # its heartbeat waits for the holder's lock
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'etlctl' "
            "AND %s = ANY(pg_blocking_pids(pid))", holder_pid) == 1, timeout=30)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # still in its statement
        holder.execute("ROLLBACK")
        out, err = proc.communicate(timeout=30)
    finally:
        holder.close()
        stop(proc)
    assert (proc.returncode, err.splitlines()[-1][-50:]) == (143, "etlctl: terminated (SIGTERM); nothing half-written")
    heartbeat = db.one("SELECT passes, stopped_at FROM etlctl.runners WHERE pid = %s", proc.pid)
    assert heartbeat["passes"] == 2 and heartbeat["stopped_at"] is not None  # the statement finished, not cancelled
    assert [a["details"]["action"] for a in db.audit(job)[1:]] == ["cooldown"]
    assert "cooldown" in out and "reset:" not in out  # it stopped before the next pass


def test_sigint_stops_it_with_130(db):
    proc = start_run(db.dsn)
    assert wait_until(lambda: passes(db, proc.pid) >= 1, timeout=30)
    out, err = stop(proc, signal.SIGINT)
    assert (proc.returncode, out) == (130, "")
    assert err.splitlines()[-1].endswith("etlctl: interrupted (SIGINT); nothing half-written")


def test_sighup_reads_the_configuration_again_and_reconnects(db, cli, acme):
    job = db.job("Jira", acme, db.integration(acme), status=running(JIRA5_STEPS))
    proc = start_run(db.dsn, "--max-sleep", "1d")
    try:
        assert wait_until(lambda: passes(db, proc.pid) >= 1 and sessions(db), timeout=30)
        before = sessions(db)
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: sessions(db) and not sessions(db) & before, timeout=30)  # a new connection
        assert cli("complete", job, "--delay", "0").exit_code == 0
        assert wait_until(lambda: db.status(job)["overall"] == "READY", timeout=30)  # and it still works
    finally:
        out, err = stop(proc)
    notes = [re.sub(STAMP, "", line) for line in err.splitlines()]
    assert notes[1] == ("etlctl: SIGHUP: configuration read again, reconnecting: waits at most 1d; reset flow: "
                        "delay 50ms, backoff 50ms,100ms,200ms,400ms, cool-down 50ms; no broker (messages wait in "
                        "the outbox)")
    assert (proc.returncode, notes[2:]) == (143, ["etlctl: terminated (SIGTERM); nothing half-written"])


@pytest.fixture
def own_server(scratch):
    """A server of this test's own, to restart."""
    server = start_server(scratch / f"restart-{uuid.uuid4().hex[:8]}")
    with admin_connect(server) as conn:
        conn.execute("CREATE DATABASE restarts")
    database = TestDatabase(server, "restarts")
    assert Cli(database.dsn)("db", "init").exit_code == 0
    yield database
    database.conn.close()
    server.stop()


def restart(server) -> None:
    from etlctl.store import embedded

    user = embedded.server_user()
    bin_dir = embedded.server_binaries(server.home, user)
    embedded._run("pg_ctl restart", [bin_dir / "pg_ctl", "-D", embedded.pgdata(server.home), "-w", "-t", 60, "-m",
                                     "fast", "restart"], user, server.home)


def test_a_database_restart_while_it_sleeps(own_server):
    db = own_server
    tenant = db.tenant("acme")
    job = db.job("Jira", tenant, db.integration(tenant), status=running(JIRA5_STEPS))
    proc = start_run(db.dsn, "--max-sleep", "1d")
    try:
        assert wait_until(lambda: passes(db, proc.pid) >= 1, timeout=30)
        time.sleep(0.5)  # asleep: nothing is due for a day
        restart(db.server)
        db.conn = psycopg.connect(db.dsn, autocommit=True, row_factory=dict_row)
        assert wait_until(lambda: sessions(db), timeout=60)  # it reconnected by itself
        assert Cli(db.dsn)("complete", job, "--delay", "0").exit_code == 0
        assert wait_until(lambda: db.status(job)["overall"] == "READY", timeout=30)
        # It says "reconnected" once a pass is through: wait for the heartbeat of the pass that reset the job.
        assert wait_until(lambda: db.value(
            "SELECT bool_or(r.last_pass_at > (SELECT max(a.at) FROM etlctl.audit a WHERE a.job_id = %s "
            "AND a.to_state = 'READY')) FROM etlctl.runners r WHERE r.pid = %s", job, proc.pid), timeout=30)
    finally:
        out, err = stop(proc)
    notes = [re.sub(STAMP, "", line) for line in err.splitlines()]
    assert len(notes) == 4, err  # started, lost (once, however many attempts), reconnected, terminated
    assert notes[1].startswith("etlctl: lost the database (") and notes[1].endswith("); reconnecting with backoff")
    assert re.fullmatch(r"etlctl: reconnected to the database after \d+s", notes[2])
    assert (proc.returncode, notes[3]) == (143, "etlctl: terminated (SIGTERM); nothing half-written")


# --- several instances -----------------------------------------------------------------------------


class Workers(threading.Thread):
    """The workers, simulated: each RUNNING run's steps finish and the run is completed (with its
    NOTIFY, as `etlctl complete` does), a moment after it started."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from etlctl.actions import flow
        from etlctl.store.connection import open_session
        from etlctl.store.settings import ConnectionSettings

        done = Jsonb(steps(JIRA5_STEPS))
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row)
            session = open_session(ConnectionSettings(dsn=self.dsn), "complete")
            while not self.halt.is_set():
                for row in conn.execute("SELECT id, status ->> 'token' AS token FROM etl_jobs "
                                        "WHERE status ->> 'overall' = 'RUNNING'").fetchall():
                    conn.execute("UPDATE etl_jobs SET status = jsonb_set(status, '{steps}', %s) "
                                 "WHERE id = %s AND status ->> 'token' = %s", (done, row["id"], row["token"]))
                    flow.complete(session, row["id"], token=row["token"], sync_date=None, delay=0.05)
                time.sleep(0.02)
            session.close()
            conn.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def resets(db) -> int:
    return db.value("SELECT count(*) FROM etlctl.audit WHERE from_state = 'FINISHED' AND to_state = 'READY'")


def cycling_jobs(db, count: int = 10) -> list[int]:
    """Jira jobs, each on its own integration, due now and again as soon as they are reset."""
    tenant = db.tenant("acme")
    return [db.job(f"Jira {n}", tenant, db.integration(tenant), next_run=None, schedule_interval_minutes=0)
            for n in range(count)]


def assert_no_double_action(db) -> None:
    """From the audit log: each run started once, completed once, and each step of its reset flow
    (schedule, retry, cool-down, reset) taken once; every completed run was reset."""
    doubled = db.sql("SELECT token, from_state, to_state, details ->> 'action' AS action, count(*) AS n "
                     "FROM etlctl.audit GROUP BY 1, 2, 3, 4 HAVING count(*) > 1")
    assert doubled == []
    unreset = db.sql("SELECT token FROM etlctl.audit WHERE to_state = 'FINISHED' AND from_state = 'RUNNING' "
                     "EXCEPT SELECT token FROM etlctl.audit WHERE to_state = 'READY'")
    assert unreset == []


def settle(db, workers: Workers, procs) -> list[tuple[str, str]]:
    """Stop the workers, let the runs reset every completed run, then stop them (SIGTERM)."""
    workers.halt.set()
    workers.join(timeout=30)
    assert workers.error is None, workers.error
    assert wait_until(lambda: not db.value("SELECT count(*) FROM etl_jobs WHERE status ->> 'overall' = 'FINISHED'"),
                      timeout=60)
    return [stop(proc) for proc in procs]


def test_three_instances_over_300_runs_never_double_act(db):
    cycling_jobs(db)
    procs = [start_run(db.dsn, "--max-sleep", "2") for _ in range(3)]
    workers = Workers(db.dsn)
    workers.start()
    try:
        assert wait_until(lambda: resets(db) >= 300, timeout=240, every=0.2)
    finally:
        outputs = settle(db, workers, procs)
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 143, err
        assert re.sub(STAMP, "", err.splitlines()[-1]) == "etlctl: terminated (SIGTERM); nothing half-written"
    assert_no_double_action(db)
    acted = {r["pid"] for r in db.sql("SELECT DISTINCT pid FROM etlctl.audit WHERE command = 'run'")}
    assert len(acted) >= 2 and acted <= {proc.pid for proc in procs}  # the work was shared
    starts = db.value("SELECT count(*) FROM etlctl.audit WHERE to_state = 'RUNNING' AND command = 'run'")
    assert starts == db.value("SELECT count(DISTINCT token) FROM etlctl.audit WHERE to_state = 'RUNNING'")


def test_kill_9_and_restart_of_one_instance_mid_flow(db, cli):
    cycling_jobs(db)
    procs = [start_run(db.dsn, "--max-sleep", "2") for _ in range(3)]
    workers = Workers(db.dsn)
    workers.start()
    try:
        assert wait_until(lambda: resets(db) >= 40, timeout=120, every=0.1)
        procs[0].kill()  # SIGKILL, wherever it was
        procs[0].communicate(timeout=30)
        killed_at = resets(db)
        assert wait_until(lambda: resets(db) >= killed_at + 40, timeout=120, every=0.1)  # the others carry on
        procs.append(start_run(db.dsn, "--max-sleep", "2"))
        assert wait_until(lambda: resets(db) >= killed_at + 80, timeout=120, every=0.1)
    finally:
        outputs = settle(db, workers, procs[1:])
    assert procs[0].returncode == -signal.SIGKILL
    assert all(proc.returncode == 143 for proc in procs[1:]), outputs
    assert_no_double_action(db)  # nothing done twice, and nothing lost: every completed run was reset
    beats = {r["pid"]: r for r in db.sql("SELECT pid, stopped_at FROM etlctl.runners")}
    assert beats[procs[0].pid]["stopped_at"] is None and all(beats[p.pid]["stopped_at"] for p in procs[1:])
    # The killed run was replaced on the same host: doctor does not call it lost.
    doctor = cli("doctor", "--json").json()
    assert [f for f in doctor["findings"] if f["code"] == "run_not_seen"] == []
