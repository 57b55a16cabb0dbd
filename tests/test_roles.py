"""sql/roles.sql: etlctl's commands work as a LOGIN role granted etlctl_runner, and nothing beyond them does."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import psycopg
import pytest

from tests.helpers import REPO, Cli, admin_connect, finished

NOW = datetime(2026, 11, 28, 15, 0, 0, tzinfo=timezone.utc)
FROZEN_AT = NOW
ROLES = (REPO / "sql" / "roles.sql").read_text()




@pytest.fixture
def runner(db, pg_server):
    """A LOGIN role that is a member of etlctl_runner, and its DSN to the test database."""
    db.conn.execute(ROLES)
    db.conn.execute(ROLES)  # idempotent: a second run changes nothing and does not fail
    name = f"etl_cron_{uuid.uuid4().hex[:8]}"
    db.sql(f"CREATE ROLE {name} LOGIN IN ROLE etlctl_runner")
    try:
        yield name, f"host={pg_server.socket_dir} port={pg_server.port} user={name} dbname={db.name}"
    finally:
        db.conn.close()
        with admin_connect(pg_server) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)")
            conn.execute(f"DROP ROLE {name}")
        db.conn = psycopg.connect(db.server.dsn("postgres"), autocommit=True)  # the db fixture's drop still works


def ok(result):
    assert result.exit_code == 0, result.stderr
    return result


def test_the_role_is_nologin_and_has_exactly_these_table_rights(db, runner):
    assert db.value("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'etlctl_runner'") is False
    granted = db.sql("""
        SELECT table_schema || '.' || table_name AS t, string_agg(privilege_type, ',' ORDER BY privilege_type) AS p
        FROM information_schema.role_table_grants WHERE grantee = 'etlctl_runner'
        GROUP BY 1 ORDER BY 1""")
    assert {r["t"]: r["p"] for r in granted} == {
        "etlctl.audit": "INSERT,SELECT", "etlctl.job_kinds": "SELECT", "etlctl.kind_steps": "SELECT",
        "etlctl.migrations": "SELECT", "etlctl.queue": "INSERT,SELECT", "etlctl.runners": "INSERT,SELECT",
        "etlctl.step_rules": "SELECT",
        "public.etl_jobs": "SELECT",
        "public.tenants": "SELECT",
    }
    readable = db.sql("""
        SELECT column_name AS c FROM information_schema.column_privileges
        WHERE grantee = 'etlctl_runner' AND privilege_type = 'SELECT' AND table_name = 'integrations' ORDER BY 1""")
    assert [r["c"] for r in readable] == ["active", "id", "provider"]  # never settings: it may hold credentials
    columns = db.sql("""
        SELECT table_schema || '.' || table_name || '.' || column_name AS c FROM information_schema.column_privileges
        WHERE grantee = 'etlctl_runner' AND privilege_type = 'UPDATE' ORDER BY 1""")
    assert [r["c"] for r in columns] == [
        # The bookkeeping of queue claim/done and of the relay; never the message itself.
        "etlctl.queue.attempts", "etlctl.queue.claimed_at", "etlctl.queue.claimed_by", "etlctl.queue.done_at",
        "etlctl.queue.last_attempt_at", "etlctl.queue.last_error", "etlctl.queue.published_at",
        "etlctl.queue.published_by", "etlctl.queue.refusals", "etlctl.queue.skip_reason", "etlctl.queue.skipped_at",
        # `etlctl run`'s heartbeat: never its host or pid.
        "etlctl.runners.last_pass_at", "etlctl.runners.max_sleep", "etlctl.runners.passes",
        "etlctl.runners.started_at", "etlctl.runners.stopped_at",
        "public.etl_jobs.error_message", "public.etl_jobs.last_run_finished_at", "public.etl_jobs.last_run_started_at",
        "public.etl_jobs.last_sync_date", "public.etl_jobs.last_updated_at", "public.etl_jobs.next_run",
        "public.etl_jobs.retry_count", "public.etl_jobs.status", "public.integrations.last_updated_at",
    ]


def test_etlctl_commands_work_as_the_runner_role(db, runner, frozen):
    name, dsn = runner
    cli = Cli(dsn)
    acme = db.tenant("acme")
    # Kinds an operator defined (as the owner), each with its message, so that their jobs start.
    db.sql("INSERT INTO etlctl.job_kinds (name, message_provider) VALUES ('solo', 'solo'), ('retry', 'retry')")
    db.sql("INSERT INTO etlctl.kind_steps (kind, position, step) VALUES ('solo', 1, 'only'), ('retry', 1, 'only')")
    one_step = {"overall": "READY", "steps": {"only": {"order": 1, "extraction": "idle", "transform": "idle",
                                                       "embedding": "idle"}}}
    job = db.job("Solo", acme, db.integration(acme, "Solo"), status=one_step)
    failed = db.job("Retry", acme, db.integration(acme, "Retry"), status={**one_step, "overall": "FAILED"},
                    last_updated_at="2026-11-28 14:00:00")
    done = db.job("Jira", acme, None, status=finished(), last_run_finished_at="2026-11-28 14:00:00")

    started = ok(cli("schedule-next", "--json")).json()["started"]
    assert sorted(r["job_id"] for r in started) == [job, failed]
    assert db.row(failed)["retry_count"] == 1
    ok(cli("reset", done))
    token = db.status(job)["token"]
    message = ok(cli("queue", "claim", "--worker", "w1", "--json")).json()
    ok(cli("queue", "done", message["id"]))
    for phase in ("extraction", "transform", "embedding"):
        ok(cli("step", job, "only", phase, "finished", "--token", token))
    ok(cli("complete", job, "--token", token))
    ok(cli("check", job))
    frozen.frozen.tick(30)
    ok(cli("sweep"))  # check passes: cool-down
    frozen.frozen.tick(30)
    ok(cli("sweep"))  # reset
    assert db.status(job)["overall"] == "READY"
    ok(cli("reset", failed, "--force"))

    ok(cli("status"))
    ok(cli("status", job))
    assert "READY; next_run in 6h" in ok(cli("why", job)).stdout
    history = ok(cli("history", job, "--json")).json()
    assert {r["who"] for r in history} == {name}  # the audit names the role that acted
    assert "etlctl_jobs{" in ok(cli("metrics")).stdout
    doctor = cli("doctor")
    assert (doctor.exit_code, doctor.stderr) == (0, ""), doctor.stdout
    assert db.audit(job)[-1]["db_user"] == name


@pytest.mark.parametrize("statement", [
    "DELETE FROM etl_jobs",
    "INSERT INTO etl_jobs (job_name, tenant_id) VALUES ('x', 1)",
    "UPDATE etl_jobs SET job_name = 'x'",
    "UPDATE etl_jobs SET active = false",
    "UPDATE integrations SET active = false",
    "SELECT settings FROM integrations",
    "SELECT base_url FROM integrations",
    "DELETE FROM etlctl.audit",
    "UPDATE etlctl.audit SET command = 'x'",
    "DELETE FROM etlctl.queue",
    "INSERT INTO etlctl.kind_steps (kind, position, step) VALUES ('jira', 9, 'x')",
    "TRUNCATE etl_jobs",
    "CREATE TABLE etlctl.x (id int)",
    "CREATE TABLE public.x (id int)",
    "DROP INDEX etlctl_one_running_per_integration",
    # A queued message is what a relay publishes to the workers: only its bookkeeping may change.
    "UPDATE etlctl.queue SET message = '{\"type\": \"rm -rf\"}'",
    "UPDATE etlctl.queue SET token = 'x'",
    "UPDATE etlctl.queue SET step = 'x', phase = 'transform'",
    "UPDATE etlctl.queue SET queue_name = 'elsewhere', job_id = 1",
    # No temporary tables, no functions of its own, anywhere.
    "CREATE TEMP TABLE x (id int)",
    "CREATE TEMPORARY VIEW x AS SELECT 1",
    "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE FUNCTION etlctl.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE SCHEMA mine",
    "ALTER TABLE etlctl.audit DISABLE TRIGGER audit_who",
    "SET session_replication_role = replica",  # which would skip the audit's trigger
])
def test_anything_beyond_its_rights_is_refused(db, runner, statement):
    db.tenant("acme")
    _, dsn = runner
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


def test_a_refused_write_says_which_grants_are_missing(db, runner):
    """Without the role's grants, etlctl says where to find them (exit 1, one line)."""
    name, dsn = runner
    db.sql("REVOKE UPDATE (status) ON etl_jobs FROM etlctl_runner")
    job = db.job("Jira", status=finished())
    result = Cli(dsn)("reset", job)
    assert result.exit_code == 1
    assert result.stderr == ("etlctl: database error: permission denied for table etl_jobs "
                             "(the role needs the grants in sql/roles.sql)\n")


def test_an_audit_row_written_by_hand_carries_the_sessions_own_user(db, runner, frozen):
    """The runner may insert audit rows (etlctl's statements do, in the same statement as each change), but
    never in another role's name: the trigger audit_who writes session_user, whatever the INSERT says."""
    name, dsn = runner
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO etlctl.audit (at, job_id, command, host, pid, db_user) "
                     "VALUES ('2020-01-01 00:00:00+00', 901, 'reset', 'h', 1, 'postgres')")
        conn.execute("SET ROLE etlctl_runner")  # who is the login, also under SET ROLE
        conn.execute("INSERT INTO etlctl.audit (job_id, command, host, pid) VALUES (902, 'reset', 'h', 1)")
    assert [(r["job_id"], r["db_user"]) for r in db.audit()] == [(901, name), (902, name)]
    # etlctl's own rows too, and their time is the statement's (the clock seam: frozen here).
    job = db.job("Jira", db.tenant("acme"), status=finished())
    assert Cli(dsn)("reset", job).exit_code == 0
    [row] = db.audit(job)
    assert (row["db_user"], row["at"]) == (name, NOW)


def test_temporary_tables_stay_with_the_roles_that_had_them(db, pg_server):
    """roles.sql takes TEMPORARY from PUBLIC (it cannot refuse it to one role otherwise) and gives it back, by
    name, to every other login that could use it: only the runner's logins lose it."""
    other = f"app_{uuid.uuid4().hex[:8]}"
    db.sql(f"CREATE ROLE {other} LOGIN")
    try:
        db.conn.execute(ROLES)
        with psycopg.connect(f"host={pg_server.socket_dir} port={pg_server.port} user={other} dbname={db.name}",
                             autocommit=True) as conn:
            conn.execute("CREATE TEMP TABLE scratch (id int)")
        assert db.value("SELECT has_database_privilege('public', current_database(), 'TEMPORARY')") is False
        db.conn.execute(ROLES)  # again: nothing more is granted or taken
        assert db.value("SELECT has_database_privilege(%s, current_database(), 'TEMPORARY')", other) is True
    finally:
        db.sql(f"REVOKE ALL ON DATABASE {db.name} FROM {other}")
        db.sql(f"DROP ROLE {other}")


def test_the_other_commands_work_as_the_runner_role_too(db, runner, frozen):
    """Besides the lifecycle above: the read-only commands, dry runs, wait-and-reset, a forced reset of a
    document etlctl cannot wholly read (its functions), and watch (LISTEN needs no grant)."""
    import signal

    from tests.test_watch import Watch

    name, dsn = runner
    cli = Cli(dsn)
    acme = db.tenant("acme")
    db.job("GitHub", acme, db.integration(acme, "GitHub"), status={"overall": "READY", "steps": {}})
    waiting = db.job("Jira", acme, None, status=finished(), last_run_finished_at="2026-11-28 14:00:00")
    deep = db.value("INSERT INTO etl_jobs (job_name, tenant_id, status) VALUES ('Deep', %s, %s::jsonb) RETURNING id",
                    acme, '{"overall": "FAILED", "steps": {}, "ui": ' + "[" * 1000 + "]" * 1000 + "}")
    for args in (["kinds"], ["kinds", "--json"], ["queue", "ls"], ["status", "--json"], ["status", deep],
                 ["why", deep], ["check", waiting], ["history", waiting], ["metrics"], ["doctor", "--json"],
                 ["schedule-next", "--dry-run", "--explain"], ["sweep", "--dry-run", "--json"],
                 ["reset", waiting, "--dry-run"], ["wait-and-reset", waiting, "--dry-run"]):
        result = cli(*args)
        assert result.exit_code in ((3,) if args[0] == "doctor" else (0,)), (args, result.stderr)
    assert cli("wait-and-reset", waiting, "--delay", "0", "--cooldown", "0").exit_code == 0
    forced = cli("reset", deep, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert db.value("SELECT status ? 'ui' FROM etl_jobs WHERE id = %s", deep) is False
    assert {row["db_user"] for row in db.audit()} == {name}

    watch = Watch(["--json"], dsn)
    try:
        assert watch.stderr_until("etlctl: watching every job on etl_job_status (Ctrl-C to stop)")
        assert cli("schedule-next").exit_code == 0
        assert watch.json()["overall"] == "RUNNING"
        assert watch.stop(signal.SIGINT) == 130
    finally:
        watch.kill()


def test_the_relay_and_its_publishing_work_as_the_runner_role(db, runner, broker, queues):
    """The outbox's bookkeeping (published, attempts, skipped) is within the role's rights on etlctl.queue."""
    _, dsn = runner
    tier = queues.tier()
    acme = db.tenant("acme")
    db.sql("UPDATE tenants SET tier = %s WHERE id = %s", tier, acme)
    db.job("Jira", acme, db.integration(acme))
    stale = db.job("GitHub", acme, db.integration(acme, "GitHub"))
    with_broker = Cli(dsn, env={"ETLCTL_AMQP_URL": broker.url})
    ok(Cli(dsn)("schedule-next"))
    db.sql("UPDATE etl_jobs SET status = status || '{\"token\": \"over\"}' WHERE id = %s", stale)
    relayed = ok(with_broker("relay", "--json")).json()
    assert (len(relayed["published"]), len(relayed["skipped"])) == (1, 1)
    db.job("Jira 2", acme, db.integration(acme))
    assert len(ok(with_broker("schedule-next", "--json")).json()["messages"]) == 1
    assert len(queues.drain(f"extraction_queue_{tier}")) == 2


def test_run_works_as_the_runner_role(db, runner):
    import signal

    from tests.helpers import etlctl_process, wait_until

    _, dsn = runner
    proc = etlctl_process(["run"], dsn)
    try:
        assert wait_until(lambda: db.value("SELECT coalesce(max(passes), 0) FROM etlctl.runners") >= 1, timeout=30)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert db.value("SELECT stopped_at IS NOT NULL FROM etlctl.runners") is True
    assert Cli(dsn)("doctor").exit_code in (0, 3)  # doctor reads the heartbeats as the role too
    assert "run_not_seen" not in Cli(dsn)("doctor", "--json").stdout
