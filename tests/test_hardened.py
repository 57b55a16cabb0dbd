"""The existing system keeps working after `etlctl db init`, on a hardened database.

The existing schema is built by its owner, EXECUTE on functions is revoked from
PUBLIC (default privileges included), the owner runs `db init`, and then a
separate writer role (not the owner, with no grant but on the existing tables)
makes the existing system's writes: start, a worker's step update, complete,
reset. Nothing etlctl added to etl_jobs (indexes, statistics, constraints,
triggers) may need a function that role cannot execute.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.helpers import Cli, admin_connect

EXISTING = (Path(__file__).parent / "fixtures" / "existing_system.sql").read_text()

# The existing system's own writes, as existing-system-contract.md §5 describes them.
WRITES = {
    "start": """UPDATE etl_jobs SET last_run_started_at = now(), last_updated_at = now(), error_message = NULL,
                    status = status || jsonb_build_object('overall', 'RUNNING', 'token', gen_random_uuid()::text,
                                                          'reset_deadline', NULL, 'reset_attempt', 0)
                WHERE job_name = 'GitHub' AND status ->> 'overall' <> 'RUNNING'""",
    "step update": """UPDATE etl_jobs SET status = jsonb_set(status, '{steps,github_repositories}',
                          '{"extraction": "finished", "transform": "finished", "embedding": "finished"}')
                      WHERE job_name = 'GitHub'""",
    "complete": """UPDATE etl_jobs SET last_run_finished_at = now(), last_updated_at = now(), next_run = NULL,
                       error_message = NULL, retry_count = 0,
                       status = status || jsonb_build_object('overall', 'FINISHED', 'reset_attempt', 0,
                           'reset_deadline', to_char(now() + interval '30 seconds', 'YYYY-MM-DD"T"HH24:MI:SSOF'))
                   WHERE job_name = 'GitHub'""",
    "extend the deadline": """UPDATE etl_jobs SET last_updated_at = now(),
                                  status = status || jsonb_build_object('reset_attempt', 1)
                              WHERE job_name = 'GitHub'""",
    "reset": """UPDATE etl_jobs SET next_run = now() + interval '6 hours', last_updated_at = now(),
                    status = status || '{"overall": "READY", "token": null, "reset_deadline": null,
                                         "reset_attempt": 0, "steps": {}}'
                WHERE job_name = 'GitHub'""",
    "rate limited": """UPDATE etl_jobs SET next_run = now() + interval '15 minutes', error_message = NULL,
                           retry_count = 0, status = status || '{"overall": "RATE_LIMIT_REACHED"}'
                       WHERE job_name = 'GitHub'""",
    "a new job": """INSERT INTO etl_jobs (job_name, tenant_id, integration_id, status)
                    VALUES ('Jira 2', 1, 1, '{"overall": "READY", "steps": {}}')""",
}


@pytest.fixture
def hardened(pg_server, blank_db):
    """(owner DSN, writer DSN): the existing schema built by its owner, EXECUTE revoked from PUBLIC."""
    suffix = uuid.uuid4().hex[:8]
    owner, writer = f"legacy_owner_{suffix}", f"legacy_writer_{suffix}"
    with admin_connect(pg_server) as conn:
        conn.execute(f"CREATE ROLE {owner} LOGIN")
        conn.execute(f"CREATE ROLE {writer} LOGIN")
        conn.execute(f"ALTER DATABASE {blank_db.name} OWNER TO {owner}")
    dsn = f"host={pg_server.socket_dir} port={pg_server.port} dbname={blank_db.name} user="
    try:
        with psycopg.connect(dsn + owner, autocommit=True) as conn:
            conn.execute("ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC")
            conn.execute(EXISTING)
            conn.execute("REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC")
            conn.execute(f"GRANT SELECT, INSERT, UPDATE ON tenants, integrations, etl_jobs TO {writer}")
            conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {writer}")
        yield dsn + owner, dsn + writer
    finally:
        blank_db.conn.close()
        with admin_connect(pg_server) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {blank_db.name} WITH (FORCE)")
            conn.execute(f"DROP ROLE {writer}")
            conn.execute(f"DROP ROLE {owner}")
        blank_db.conn = psycopg.connect(pg_server.dsn("postgres"), autocommit=True)  # blank_db's own drop still works


def test_the_existing_systems_writes_succeed_after_db_init(hardened):
    owner, writer = hardened
    result = Cli(owner)("db", "init")
    assert result.exit_code == 0, result.stderr
    with psycopg.connect(owner) as conn:
        # The functions etlctl created are out of PUBLIC's reach, as the hardening intends...
        assert not conn.execute("SELECT bool_or(has_function_privilege('public', p.oid, 'EXECUTE')) FROM pg_proc p "
                                "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'etlctl'").fetchone()[0]
        # ...and nothing etlctl put on etl_jobs calls one of them.
        on_etl_jobs = conn.execute("""
            SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'etl_jobs'::regclass
            UNION ALL SELECT pg_get_statisticsobjdef(oid) FROM pg_statistic_ext WHERE stxrelid = 'etl_jobs'::regclass
            UNION ALL SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'etl_jobs'::regclass
            UNION ALL SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'etl_jobs'::regclass""").fetchall()
        calls = [d for (d,) in on_etl_jobs if re.search(r"etlctl\.\w+\s*\(", d)]  # a call of an etlctl function
        assert len(on_etl_jobs) >= 8 and not calls, calls

    with psycopg.connect(writer, autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0].startswith("legacy_writer_")
        for name, statement in WRITES.items():
            assert conn.execute(statement).rowcount == 1, name
        conn.execute("ANALYZE etl_jobs")  # statistics objects are computed too; as a non-owner this only warns
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute("ANALYZE etl_jobs")  # the owner's (and autovacuum's) ANALYZE computes the due statistics
        assert conn.execute("SELECT status ->> 'overall' FROM etl_jobs WHERE job_name = 'GitHub'").fetchone()[0] == \
            "RATE_LIMIT_REACHED"
