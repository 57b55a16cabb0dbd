"""Helpers for the relay's tests: tenants whose queues are the test's own, and outboxes filled fast."""

from __future__ import annotations

import json

from tests.helpers import Cli


def broker_cli(db, broker, **env) -> Cli:
    """etlctl against the test's database and the session's broker."""
    return Cli(db.dsn, env={"ETLCTL_AMQP_URL": broker.url, **env}, unaimed=True)  # fixes without their --dsn


def tenant_of_tier(db, tier: str, name: str = "acme") -> int:
    tenant = db.tenant(name)
    db.sql("UPDATE tenants SET tier = %s WHERE id = %s", tier, tenant)
    return tenant


def start_jira_jobs(db, cli, tenant: int, count: int = 1) -> list[dict]:
    """``count`` Jira jobs, each on its own integration, started by schedule-next (run with ``cli``):
    each has one message in the outbox. Returns schedule-next's started records."""
    for n in range(count):
        db.job(f"Jira {n}" if count > 1 else "Jira", tenant, db.integration(tenant), next_run=None)
    result = cli("schedule-next", "--json")
    assert result.exit_code == 0, result.stderr
    started = result.json()["started"]
    assert len(started) == count
    return started


def fill_outbox(db, tenant: int, queue: str, count: int, first: int = 1) -> list[int]:
    """``count`` pending messages of one RUNNING job's current run (steps step_<first>..), straight into the
    outbox: a relay sees them as any others. Returns their ids, oldest first."""
    job = db.value("SELECT id FROM etl_jobs WHERE tenant_id = %s AND job_name = 'Bulk'", tenant)
    if job is None:
        job = db.job("Bulk", tenant, None, status={"overall": "RUNNING", "token": "bulk-run", "steps": {}})
    rows = db.sql(
        "INSERT INTO etlctl.queue (job_id, tenant_id, token, step, phase, queue_name, message) "
        "SELECT %s, %s, 'bulk-run', 'step_' || n, 'extraction', %s, "
        "       jsonb_build_object('job_id', %s, 'type', 'step_' || n, 'token', 'bulk-run') "
        "FROM generate_series(%s::int, %s::int) n ORDER BY n RETURNING id",
        job, tenant, queue, job, first, first + count - 1)
    return [r["id"] for r in rows]


def outbox(db) -> dict[int, dict]:
    return {r["id"]: r for r in db.sql("SELECT * FROM etlctl.queue ORDER BY id")}


def published_ids(db) -> set[int]:
    return {r["id"] for r in db.sql("SELECT id FROM etlctl.queue WHERE published_at IS NOT NULL")}


def message_ids(received) -> list[int]:
    return [int(r.properties.message_id) for r in received]


def bodies(received) -> list[dict]:
    return [json.loads(r.body) for r in received]
