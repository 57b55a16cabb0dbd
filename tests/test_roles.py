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
        "etlctl.migrations": "SELECT", "etlctl.queue": "INSERT,SELECT,UPDATE", "etlctl.step_rules": "SELECT",
        "public.etl_jobs": "SELECT",
        "public.tenants": "SELECT",
    }
    readable = db.sql("""
        SELECT column_name AS c FROM information_schema.column_privileges
        WHERE grantee = 'etlctl_runner' AND privilege_type = 'SELECT' AND table_name = 'integrations' ORDER BY 1""")
    assert [r["c"] for r in readable] == ["active", "id", "provider"]  # never settings: it may hold credentials
    columns = db.sql("""
        SELECT table_name || '.' || column_name AS c FROM information_schema.column_privileges
        WHERE grantee = 'etlctl_runner' AND privilege_type = 'UPDATE' AND table_schema = 'public' ORDER BY 1""")
    assert [r["c"] for r in columns] == [
        "etl_jobs.error_message", "etl_jobs.last_run_finished_at", "etl_jobs.last_run_started_at",
        "etl_jobs.last_sync_date", "etl_jobs.last_updated_at", "etl_jobs.next_run", "etl_jobs.retry_count",
        "etl_jobs.status", "integrations.last_updated_at",
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
