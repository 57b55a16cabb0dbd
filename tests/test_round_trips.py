"""Round trips, counted on the wire (tests/pgproxy.py), not in etlctl's own code.

- `check` runs one statement and opens no transaction;
- `complete`, `reset` and `step` run in exactly one transaction each (a single
  autocommit statement is one transaction);
- a `schedule-next` or `sweep` tick runs a number of statements that does not
  grow with the number of due jobs (a sweep reads and writes in batches of
  --batch jobs, 1000 by default: the count is constant while the due jobs fit
  in one batch, and grows by two statements per further batch).

BENCHMARKS.md reports the same counts (bench/run.py uses the same proxy).
"""

from __future__ import annotations

import pytest

from tests.helpers import JIRA_STEPS, Cli, finished, running
from tests.pgproxy import PgProxy, query_name


@pytest.fixture
def proxy(pg_server):
    with PgProxy(pg_server.socket_dir, pg_server.port) as running_proxy:
        yield running_proxy


def run(proxy, db, *args):
    """Run etlctl through the proxy; return its exit code and its one connection's messages."""
    proxy.reset()
    result = Cli(proxy.dsn(db.name))(*args)
    connections = proxy.client_connections()
    assert len(connections) == 1, [c.startup for c in connections]
    return result, connections[0]


def jira(db, status, **columns) -> int:
    tenant = db.tenant(f"t-{db.value('SELECT count(*) FROM tenants')}")
    return db.job("Jira", tenant, db.integration(tenant), status=status, **columns)


def test_the_proxy_sees_session_options_in_the_startup_packet(proxy, db):
    job = jira(db, finished())
    result, conn = run(proxy, db, "check", job)
    assert result.exit_code == 0, result.stderr
    assert conn.startup["application_name"] == "etlctl"
    assert "statement_timeout" in conn.startup["options"]  # no SET round trip


def test_check_is_one_statement_outside_any_transaction(proxy, db):
    job = jira(db, finished())
    result, conn = run(proxy, db, "check", job)
    assert result.exit_code == 0, result.stderr
    assert [query_name(s) for s in conn.statements] == ["job_detail"]
    assert conn.control == []


def test_check_by_name_adds_one_lookup(proxy, db):
    jira(db, finished())
    result, conn = run(proxy, db, "check", "Jira")
    assert result.exit_code == 0, result.stderr
    assert [query_name(s) for s in conn.statements] == ["find_jobs", "job_detail"]


@pytest.mark.parametrize("args, status, expected", [
    (("complete", "{job}", "--token", "tok-1"), running(), [["complete_job"]]),
    (("step", "{job}", JIRA_STEPS[0], "embedding", "running"), running(value="idle"), [["step_update"]]),
    (("reset", "{job}"), finished(), [["job_detail", "apply_transitions"]]),
    (("reset", "{job}", "--force"), running(value="idle"), [["job_detail", "apply_transitions"]]),
])
def test_each_write_is_one_transaction(proxy, db, args, status, expected):
    job = jira(db, status)
    result, conn = run(proxy, db, *[a.format(job=job) for a in args])
    assert result.exit_code == 0, result.stderr
    assert [[query_name(s) for s in tx] for tx in conn.transactions()] == expected
    if expected[0] == ["job_detail", "apply_transitions"]:
        assert conn.control == ["BEGIN", "COMMIT"]


def seed_due(db, count: int, status: dict, **columns) -> None:
    """`count` jobs, each on an integration of its own, in one statement."""
    from psycopg.types.json import Jsonb

    db.sql("""
        WITH t AS (INSERT INTO tenants (name) SELECT 'bulk-' || g || '-' || %s FROM generate_series(1, %s) g RETURNING id),
        i AS (INSERT INTO integrations (provider, type, tenant_id) SELECT 'Jira', 'Data', id FROM t RETURNING id, tenant_id)
        INSERT INTO etl_jobs (job_name, tenant_id, integration_id, status, last_run_finished_at)
        SELECT 'Jira', tenant_id, id, %s, %s FROM i
    """, db.value("SELECT count(*) FROM tenants"), count, Jsonb(status), columns.get("last_run_finished_at"))


def tick_statements(proxy, db, *args) -> list[str]:
    result, conn = run(proxy, db, *args)
    assert result.exit_code == 0, result.stderr
    return [query_name(s) for s in conn.statements]


def test_a_schedule_tick_does_not_grow_with_the_due_jobs(proxy, db):
    seed_due(db, 3, {"overall": "READY", "steps": {}})
    few = tick_statements(proxy, db, "schedule-next")
    assert db.value("SELECT count(*) FROM etl_jobs WHERE status ->> 'overall' = 'RUNNING'") == 3
    seed_due(db, 300, {"overall": "READY", "steps": {}})
    many = tick_statements(proxy, db, "schedule-next")
    assert db.value("SELECT count(*) FROM etl_jobs WHERE status ->> 'overall' = 'RUNNING'") == 303
    assert few == many == ["try_tick_lock", "schedule_claim", "schedule_start", "schedule_chain", "release_tick_lock"]


def test_a_sweep_tick_does_not_grow_with_the_due_jobs(proxy, db):
    done = finished()
    seed_due(db, 3, done)
    few = tick_statements(proxy, db, "sweep")
    assert db.value("SELECT count(*) FROM etl_jobs WHERE status ->> 'reset_stage' = 'check'") == 3
    seed_due(db, 300, done)
    many = tick_statements(proxy, db, "sweep")
    assert db.value("SELECT count(*) FROM etl_jobs WHERE status ->> 'reset_stage' = 'check'") == 303
    assert few == many == ["try_tick_lock", "sweep_batch", "apply_transitions_skip_locked", "release_tick_lock"]


def test_a_sweep_past_one_batch_adds_two_statements_per_batch(proxy, db):
    seed_due(db, 30, finished())
    statements = tick_statements(proxy, db, "sweep", "--batch", "10")
    # 30 jobs in batches of 10: three full batches, then an empty read that ends the pass.
    assert statements == ["try_tick_lock"] + ["sweep_batch", "apply_transitions_skip_locked"] * 3 + ["sweep_batch", "release_tick_lock"]
