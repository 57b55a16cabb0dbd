"""The command line itself: help, version, job lookup, configuration and exit codes."""

from __future__ import annotations

import re
import time

import psycopg
import pytest

from etlctl.cli import COMMANDS
from tests.helpers import Cli, finished, run_process


def test_version():
    result = Cli(None)("--version")
    assert (result.exit_code, result.stdout) == (0, "etlctl 0.1.0\n")


def test_help_lists_every_command():
    result = Cli(None)("--help")
    assert result.exit_code == 0
    listed = re.findall(r"^  (\S+)\s", result.stdout.split("Commands:")[1], re.MULTILINE)
    assert listed == list(COMMANDS)


def _all_commands():
    from etlctl.cli import cli
    import click

    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        if isinstance(command, click.Group):
            for sub in command.commands:
                yield [name, sub]
        else:
            yield [name]


@pytest.mark.parametrize("path", list(_all_commands()), ids=" ".join)
def test_every_command_help_has_an_example(path):
    result = Cli(None)(*path, "--help")
    assert result.exit_code == 0, result.stderr
    example = result.stdout.split("Example:\n", 1)
    assert len(example) == 2, result.stdout
    assert f"etlctl {' '.join(path)}" in example[1] or f"etlctl {path[0]}" in example[1]


@pytest.mark.parametrize("command", ["run", "schedule-next"])
def test_chain_grace_help_shows_its_default_with_its_unit(command):
    result = Cli(None)(command, "--help")
    assert result.exit_code == 0, result.stderr
    assert "[default: 60s]" in " ".join(result.stdout.split()), result.stdout


def test_unknown_command_and_option_are_one_line_usage_errors():
    for args in (["frobnicate"], ["status", "--frob"], ["check"]):
        result = Cli(None)(*args)
        assert result.exit_code == 2
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("etlctl: error: "), result.stderr


def test_unreachable_database_exits_6_with_one_line_and_no_password(tmp_path):
    dsn = f"postgresql://etl:s3cret-pw@/nowhere?host={tmp_path}&port=5999&connect_timeout=2"
    result = Cli(dsn)("status")
    assert result.exit_code == 6
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("etlctl: cannot reach the database (etl@")
    assert "s3cret-pw" not in result.stderr + result.stdout
    verbose = Cli(dsn)("-v", "status")
    assert "s3cret-pw" not in verbose.stderr + verbose.stdout


def test_an_unreachable_database_without_a_user_is_shown_without_a_bare_at(tmp_path):
    result = Cli(f"host={tmp_path} port=5999 dbname=x connect_timeout=2")("status")
    assert result.exit_code == 6
    assert result.stderr.startswith(f"etlctl: cannot reach the database ({tmp_path}:5999/x): "), result.stderr
    libpq = Cli(None, {"PGHOST": str(tmp_path), "PGPORT": "5999", "PGDATABASE": "x", "PGCONNECT_TIMEOUT": "2"})("status")
    assert libpq.exit_code == 6
    assert libpq.stderr.startswith(f"etlctl: cannot reach the database (PG* variables: {tmp_path}:5999/x): "), libpq.stderr


def test_verbose_belongs_to_the_run_that_asked_for_it(tmp_path):
    cli = Cli(f"postgresql://etl@/nowhere?host={tmp_path}&port=5999&connect_timeout=2")
    for args in (["-v", "status"], ["status", "-v"]):
        verbose = cli(*args)
        assert verbose.exit_code == 6 and "\netlctl: detail: " in verbose.stderr, verbose.stderr
    plain = cli("status")  # the same process, the next run: no details unless asked again
    assert plain.exit_code == 6 and plain.stderr.count("\n") == 1, plain.stderr


def test_a_dsn_that_does_not_parse_is_a_usage_error_that_does_not_echo_it():
    result = Cli("host=x password=s3cret-pw = =")("status")
    assert result.exit_code == 2
    assert "s3cret-pw" not in result.stderr
    assert result.stderr == "etlctl: invalid --dsn/ETLCTL_DSN: expected a libpq connection string or a postgresql:// URI\n"


def test_unknown_job_or_tenant_exits_5(cli, db):
    for ref, shown in (("999", "999"), ("NoSuchJob", "'NoSuchJob'")):
        result = cli("status", ref)
        assert (result.exit_code, result.stderr) == (5, f"etlctl: no job {shown}\n")
    for args in (["status", "--tenant", "nobody"], ["schedule-next", "--tenant", "nobody"]):
        result = cli(*args)
        assert (result.exit_code, result.stderr) == (5, "etlctl: no tenant 'nobody'\n")


def test_etlctl_alone_prints_its_help():
    result = Cli(None)()
    assert result.exit_code == 0 and result.stdout.startswith("Usage: etlctl [OPTIONS] COMMAND") and result.stderr == ""
    group = Cli(None)("queue")
    assert group.exit_code == 0 and group.stdout.startswith("Usage: etlctl queue [OPTIONS] COMMAND")


def test_job_names_resolve_case_insensitively_and_ambiguity_lists_candidates(cli, db):
    acme, beta = db.tenant("acme"), db.tenant("beta")
    a = db.job("Jira", acme)
    b = db.job("Jira", beta)
    result = cli("status", "jira")
    assert result.exit_code == 2
    assert result.stderr == (f"etlctl: job name 'jira' matches 2 jobs; give a job id or --tenant: "
                             f"{a} (Jira, tenant acme), {b} (Jira, tenant beta)\n")
    assert cli("status", "jira", "--tenant", "beta", "--json").json()["id"] == b
    assert cli("status", "Jira", "--tenant", str(acme), "--json").json()["id"] == a
    assert cli("status", "Jira", "--tenant", "nobody").exit_code == 5


@pytest.mark.parametrize(("args", "message"), [
    (["check", "1", "--retry", "--backoff", "30,,x"], "invalid --backoff '30,,x': expected comma-separated durations such as 30,60,180,300"),
    (["check", "1", "--retry", "--backoff", ""], "invalid --backoff '': expected comma-separated durations"),
    (["wait-and-reset", "1", "--delay", "-5"], "invalid --delay '-5': expected a duration such as 30, 1.5, 500ms, 45s, 1m10s, 1h30m or 2d"),
    (["wait-and-reset", "1", "--cooldown", "soon"], "invalid --cooldown 'soon'"),
    (["sweep", "--backoff", "10,-1"], "invalid --backoff '-1'"),
    (["--lock-timeout", "-1", "status"], "Invalid value for '--lock-timeout'"),
    (["status", "--db-timezone", "Mars/Olympus"], "invalid --db-timezone 'Mars/Olympus'"),
    (["complete", "1", "--sync-date", "yesterday"], "invalid --sync-date 'yesterday'"),
    (["complete", "1", "--sync-date", "2026-W48-6"], "invalid --sync-date '2026-W48-6'"),
    (["--lock-timeout", "0", "reset", "1"], "'0': must be at least 1ms (0 would mean no limit at all)"),
    (["status", "--statement-timeout", "0s"], "must be at least 1ms"),
])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(cli, db, args, message):
    job = db.job("Jira", status=finished())
    assert job == 1
    before = db.row(job)
    result = cli(*args)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert db.row(job) == before


def test_env_timings_are_validated_like_flags(cli, db):
    db.job("Jira", status=finished())
    result = cli("sweep", env={"ETLCTL_BACKOFF": "30,,x"})
    assert (result.exit_code, result.stderr) == (
        2, "etlctl: invalid ETLCTL_BACKOFF '30,,x': expected comma-separated durations such as 30,60,180,300\n")


def test_connection_options_work_before_and_after_the_command(db):
    flag_first = Cli(None)("--dsn", db.dsn, "status", "--json")
    flag_after = Cli(None)("status", "--dsn", db.dsn, "--json")
    assert flag_first.exit_code == flag_after.exit_code == 0
    assert flag_first.json() == flag_after.json() == []
    # A flag wins over the environment, wherever it is given.
    assert Cli("host=/nonexistent dbname=x")("status", "--dsn", db.dsn).exit_code == 0


def test_pg_variables_are_used_when_no_dsn_is_given(db, pg_server):
    env = {"PGHOST": pg_server.socket_dir, "PGPORT": str(pg_server.port), "PGDATABASE": db.name, "PGUSER": "postgres"}
    result = Cli(None)("status", "--json", env=env)
    assert (result.exit_code, result.json()) == (0, [])


def test_sessions_carry_application_name_and_timeouts(db):
    """Every session announces itself and carries its limits, with no extra round trip."""
    from etlctl.store import settings as config
    from etlctl.store import connection as etl_db

    settings = config.ConnectionSettings(dsn=db.dsn, statement_timeout=12, lock_timeout=3, idle_timeout=45,
                                         db_timezone="America/New_York")
    with etl_db.connect(settings, "test") as session:
        row = session.conn.execute(
            "SELECT current_setting('application_name') AS app, current_setting('statement_timeout') AS st, "
            "current_setting('lock_timeout') AS lt, current_setting('idle_in_transaction_session_timeout') AS it, "
            "current_setting('TimeZone') AS tz").fetchone()
    assert row == {"app": "etlctl", "st": "12s", "lt": "3s", "it": "45s", "tz": "America/New_York"}


def test_a_held_row_lock_exits_7_within_the_lock_timeout(db):
    job = db.job("Jira", status=finished())
    before = db.row(job)
    with psycopg.connect(db.dsn) as holder:
        holder.execute("SELECT 1 FROM etl_jobs WHERE id = %s FOR UPDATE", (job,))
        started = time.monotonic()
        result = run_process(["reset", job, "--lock-timeout", "1"], db.dsn)
        elapsed = time.monotonic() - started
        holder.rollback()
    assert result.exit_code == 7, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "etlctl: the database is busy: lock timeout: another session held a row of etl_jobs locked longer than "
        "--lock-timeout; nothing was changed, try again")
    assert elapsed < 1 + 1 + 1.5  # lock_timeout + 1 s, plus the interpreter's start-up
    assert db.row(job) == before and db.audit(job) == []


def test_an_unexpected_database_error_is_exit_1_with_one_line(db, cli):
    db.job("Jira")
    db.sql("ALTER TABLE etl_jobs RENAME COLUMN retry_count TO retries")  # a database etlctl does not expect
    result = cli("status", "1")
    assert result.exit_code == 1
    assert result.stderr == 'etlctl: database error: column j.retry_count does not exist\n'


def test_status_table_and_json(db, cli):
    acme = db.tenant("acme")
    integration = db.integration(acme, "Jira", active=False)
    job = db.job("Jira", acme, integration, status=finished(), error_message="x" * 80)
    db.sql("UPDATE etl_jobs SET next_run = now()::timestamp + interval '3 hours 12 minutes 30 seconds'")
    table = cli("status")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "TENANT", "JOB", "KIND", "OVERALL", "NEXT", "RUN", "ACTIVE", "LAST", "FINISHED", "ERROR"]
    assert re.match(rf"{job}\s+acme\s+Jira\s+jira\s+FINISHED\s+after this run\s+no: integration\s+-\s+x{{49}}…$", lines[2]), lines[2]
    data = cli("status", "--json").json()
    assert data[0]["id"] == job and data[0]["integration_active"] is False and data[0]["kind"] == "jira"
    assert 3 * 3600 < data[0]["next_run_in_seconds"] <= 3 * 3600 + 13 * 60
    detail = cli("status", job, "--json").json()
    assert detail["all_finished"] is True
    assert [(s["step"], s["verdict"]) for s in detail["steps"]] == [
        ("jira_projects_and_issue_types", "finished"), ("jira_statuses_and_relationships", "finished"),
        ("jira_issues_with_changelogs", "finished"), ("jira_dev_status", "finished"),
        ("jira_sprint_reports", "absent")]  # the kind's fifth step, not in this older document: not judged


def test_status_of_one_job_shows_the_grid_in_step_order(db, cli):
    tenant = db.tenant("acme")
    job = db.job("Jira", tenant, status={"overall": "RUNNING", "token": "t9", "steps": {
        "jira_dev_status": {"extraction": "running", "transform": "idle", "embedding": "idle"},
        "jira_projects_and_issue_types": {"extraction": "finished", "transform": "finished", "embedding": "finished"},
    }})
    out = cli("status", job).stdout
    grid = out.split("\n\n", 1)[1].splitlines()
    assert [line.split()[:2] for line in grid[2:]] == [
        ["1", "jira_projects_and_issue_types"], ["2", "jira_statuses_and_relationships"],
        ["3", "jira_issues_with_changelogs"], ["4", "jira_dev_status"], ["5", "jira_sprint_reports"]]
    assert grid[5].split()[2:] == ["running", "idle", "idle", "running"]
    assert "overall        RUNNING\n" in out and "token          t9\n" in out


def test_naive_timestamps_are_read_in_the_configured_zone(db, cli):
    job = db.job("Jira", status=finished())
    db.sql("UPDATE etl_jobs SET next_run = '2026-11-28 10:00:00' WHERE id = %s", job)
    utc = cli("status", job, "--json").json()["next_run"]
    ny = cli("status", job, "--json", "--db-timezone", "America/New_York").json()["next_run"]
    assert utc == "2026-11-28T10:00:00+00:00"
    assert ny == "2026-11-28T10:00:00-05:00"


def test_status_lists_at_most_limit_jobs_and_says_there_are_more(db, cli):
    tenant = db.tenant("acme")
    ids = [db.job(f"Job {n}", tenant) for n in range(3)]
    two = cli("status", "--limit", "2", "--json")
    assert [r["id"] for r in two.json()] == ids[:2]
    assert two.stderr == "showing the first 2 jobs; there are more (use --limit or --tenant)\n"
    three = cli("status", "--limit", "3", "--json")
    assert [r["id"] for r in three.json()] == ids and three.stderr == ""


def test_infinite_timestamps_written_by_other_programs_do_not_take_commands_down(db, cli):
    """PostgreSQL's 'infinity' fits every timestamp column; Python's datetime does not."""
    tenant = db.tenant("acme")
    never = db.job("Jira", tenant, db.integration(tenant), next_run="infinity", last_sync_date="-infinity")
    done = db.job("GitHub", tenant, db.integration(tenant, "GitHub"),
                  status=finished(["github_repositories", "github_prs_commits_reviews_comments"]),
                  last_run_finished_at="2026-01-01 00:00:00", last_sync_date="infinity",
                  last_run_started_at="-infinity")
    table = cli("status")
    assert table.exit_code == 0, table.stderr
    assert "infinity (never)" in table.stdout
    assert cli("status", "--json").json()[0]["next_run"] == "infinity"
    assert cli("status", never).exit_code == 0
    assert cli("why", never).exit_code == 0
    doctor = cli("doctor", "--json")
    assert doctor.exit_code == 3, doctor.stderr
    assert [(f["code"], f["job_ids"]) for f in doctor.json()["findings"]] == [
        ("stuck_finished", [done]),  # finished on 2026-01-01, its check passes, nothing reset it
        ("not_starting", [never])]  # next_run infinity: further ahead than its interval
    assert doctor.json()["findings"][1]["summary"].startswith(f"job {never} (Jira, tenant acme) READY: next_run is infinity")
    assert cli("metrics").exit_code == 0
    assert cli("schedule-next", "--dry-run", "--explain").stdout == (
        f"not starting job {never} (Jira, tenant acme): next_run never (infinity)\n"
        f"not starting job {done} (GitHub, tenant acme): FINISHED, waiting for its reset (in flight)\n")
    assert cli("sweep", "--delay", "0", "--cooldown", "0").exit_code == 0
    assert db.status(done)["overall"] == "READY"


def test_status_shows_a_failed_jobs_retry_time_not_its_stale_next_run(db, cli, frozen):
    from tests.test_doctor import naive

    acme = db.tenant("acme")
    job = db.job("Jira", acme, status={"overall": "FAILED", "steps": {}}, next_run=naive(-86400),
                 retry_interval_minutes=30, last_run_finished_at=naive(-600), last_updated_at=naive(-600))
    result = cli("status")
    assert (result.exit_code, result.stderr) == (0, "")
    assert "retry 2026-11-28 15:20:00 (in 20m)" in result.stdout.splitlines()[2]
    record = cli("status", "--json").json()[0]
    assert (record["id"], record["retry_at"]) == (job, "2026-11-28T15:20:00+00:00")
    single = cli("status", job)
    assert (single.exit_code, single.stderr) == (0, "")
    assert "next run       retry 2026-11-28 15:20:00 (in 20m)\n" in single.stdout
    assert cli("status", job, "--json").json()["retry_at"] == "2026-11-28T15:20:00+00:00"


def test_status_shows_a_running_jobs_next_run_as_after_this_run_not_its_stale_past_one(db, cli, frozen):
    """The next_run a run started from is in the past: shown, it would read as overdue. The reset sets
    the next one; JSON keeps the raw value."""
    from tests.test_doctor import naive

    acme = db.tenant("acme")
    job = db.job("Jira", acme, status={"overall": "RUNNING", "token": "t", "steps": {}}, next_run=naive(-212))
    result = cli("status")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.splitlines()[2].split() == [str(job), "acme", "Jira", "jira", "RUNNING", "after", "this", "run",
                                                     "yes", "-", "-"]
    assert cli("status", "--json").json()[0]["next_run"] == "2026-11-28T14:56:28+00:00"
    single = cli("status", job)
    assert "next run       after this run\n" in single.stdout
    assert cli("status", job, "--json").json()["next_run"] == "2026-11-28T14:56:28+00:00"
