"""The due rule is written out twice, in the index etlctl_jobs_due (built-in functions only, so
that any role can write etl_jobs) and in the scheduler's `_due_at` fragment: the planner uses the
index only while both are the same expression."""

from __future__ import annotations

import pytest

from etlctl.store import queries


@pytest.fixture
def many_jobs(db):
    """5,000 READY jobs not due for a day, on integrations of their own, and a few due: statistics fresh."""
    db.sql("""
        WITH t AS (INSERT INTO tenants (name) SELECT 'bulk-' || g FROM generate_series(1, 5000) g RETURNING id),
        i AS (INSERT INTO integrations (provider, type, tenant_id) SELECT 'Jira', 'Data', id FROM t RETURNING id, tenant_id)
        INSERT INTO etl_jobs (job_name, tenant_id, integration_id, next_run)
        SELECT 'Jira', tenant_id, id, CASE WHEN id % 1000 = 0 THEN now() - interval '1 hour'
                                           ELSE now() + interval '1 day' END FROM i""")
    db.sql("ANALYZE etl_jobs")
    return db


def plan(db, name: str, **params) -> str:
    rows = db.conn.execute("EXPLAIN " + queries.get(name), {"now": None, "tenant": None, "limit": 1000, **params})
    return "\n".join(r["QUERY PLAN"] for r in rows.fetchall())


def test_the_scheduler_finds_due_jobs_through_the_index(many_jobs):
    # schedule_claim looks for the few due jobs among all: a range scan of the index.
    # (schedule_start then reads the jobs of the claimed integrations: its plan does not depend on it.)
    claim = plan(many_jobs, "schedule_claim")
    assert "Index Scan using etlctl_jobs_due on etl_jobs" in claim, claim


def test_the_fragment_and_the_index_hold_the_same_expression(many_jobs):
    """Both, evaluated on every row, agree: the index's own definition against the query's fragment."""
    indexed = many_jobs.value("SELECT pg_get_indexdef('etlctl_jobs_due'::regclass)")
    expression = indexed.split(" USING btree ", 1)[1].rsplit(" WHERE ", 1)[0]
    many_jobs.sql("""UPDATE etl_jobs SET status = '{"overall": "FAILED", "steps": {}}', last_run_started_at = now()
                     WHERE id % 7 = 0""")
    many_jobs.sql("""UPDATE etl_jobs SET status = '{"overall": "RUNNING", "steps": {}}', integration_id = NULL
                     WHERE id % 7 = 1""")
    # The index's columns are unqualified; in a query on `etl_jobs j` alone they are j's.
    differ = many_jobs.value(f"SELECT count(*) FROM etl_jobs j WHERE {expression} IS DISTINCT FROM ({queries.get('_due_at')})")
    assert differ == 0
