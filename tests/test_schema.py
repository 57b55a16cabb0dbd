"""`etlctl db init`: fresh installs, existing-system databases, and their equivalence."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import Cli

FIXTURES = Path(__file__).parent / "fixtures"
EXISTING_TABLES = ("tenants", "integrations", "etl_jobs")


def load_existing_system(database) -> None:
    database.conn.execute((FIXTURES / "existing_system.sql").read_text())


def snapshot_rows(database) -> dict:
    return {t: database.sql(f"SELECT to_jsonb(x) AS row FROM {t} x ORDER BY id") for t in EXISTING_TABLES}


def snapshot_columns(database) -> list:
    return database.sql(
        "SELECT table_name, column_name, data_type, column_default, is_nullable, ordinal_position "
        "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
    )


def schema_dump(database) -> str:
    from etlctl.store import embedded

    pg_dump = embedded.binaries() / "pg_dump"
    out = subprocess.run([str(pg_dump), "--schema-only", "--no-owner", "--no-privileges", "-d", database.dsn],
                         check=True, capture_output=True, text=True).stdout
    lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith(("--", "SET ", "SELECT pg_catalog.set_config", "\\"))]
    return "\n".join(lines)


def test_fresh_install_creates_everything_and_is_idempotent(blank_db):
    cli = Cli(blank_db.dsn)
    first = cli("db", "init")
    assert first.exit_code == 0, first.stderr
    assert first.stdout == "created etlctl's schema on an empty database: 0001_etlctl_schema, 0002_one_running_per_integration, 0003_scheduling, 0004_due_statistics, 0005_existing_system_contract, 0006_relay_bookkeeping\n"
    tables = {r["t"] for r in blank_db.sql(
        "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables WHERE table_schema IN ('public', 'etlctl')")}
    assert {"public.tenants", "public.integrations", "public.etl_jobs", "etlctl.migrations", "etlctl.job_kinds",
            "etlctl.kind_steps", "etlctl.audit", "etlctl.queue"} <= tables
    before = schema_dump(blank_db)
    again = cli("db", "init")
    assert (again.exit_code, again.stdout) == (0, "etlctl's schema is up to date\n")
    assert schema_dump(blank_db) == before


def test_seeded_kinds_follow_the_existing_system(db):
    rows = db.sql("SELECT kind, position, step, display_name, chain FROM etlctl.kind_steps ORDER BY kind, position")
    assert [(r["kind"], r["position"], r["step"], r["display_name"], r["chain"]) for r in rows] == [
        ("github", 1, "github_repositories", "Repositories", False),
        ("github", 2, "github_prs_commits_reviews_comments", "PRs, Commits, Reviews & Comments", False),
        ("jira", 1, "jira_projects_and_issue_types", "Projects & Types", False),
        ("jira", 2, "jira_statuses_and_relationships", "Statuses & Relations", False),
        ("jira", 3, "jira_issues_with_changelogs", "Issues & Changelogs", False),
        ("jira", 4, "jira_dev_status", "Development Status", False),
        ("jira", 5, "jira_sprint_reports", "Sprint Reports", False),
        ("wex ad", 1, "wex_ad_users", "AD Users", False),
        ("wex fabric", 1, "wex_fabric_data", "Fabric Data", False),
    ]
    kinds = db.sql("SELECT name, message_provider, message_extra FROM etlctl.job_kinds ORDER BY name")
    assert [(k["name"], k["message_provider"], k["message_extra"]) for k in kinds] == [
        ("github", "github", {"first_item": True, "last_item": False}),
        ("jira", "jira", {}),
        ("wex ad", None, {}),
        ("wex fabric", None, {}),
    ]
    assert db.sql("SELECT step, rule FROM etlctl.step_rules ORDER BY step") == [
        {"step": step, "rule": "finished_or_idle"} for step in (
            "github_commits", "github_prs_commits_reviews_comments", "github_pull_requests", "github_reviews",
            "jira_dev_status")
    ]


def test_existing_system_database_keeps_every_row_and_column(blank_db):
    load_existing_system(blank_db)
    rows, columns = snapshot_rows(blank_db), snapshot_columns(blank_db)
    result = Cli(blank_db.dsn)("db", "init")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "applied migrations: 0001_etlctl_schema, 0002_one_running_per_integration, 0003_scheduling, 0004_due_statistics, 0005_existing_system_contract, 0006_relay_bookkeeping\n"
    assert snapshot_rows(blank_db) == rows
    assert snapshot_columns(blank_db) == columns
    applied = [r["name"] for r in blank_db.sql("SELECT name FROM etlctl.migrations ORDER BY name")]
    assert applied == ["0001_etlctl_schema", "0002_one_running_per_integration", "0003_scheduling", "0004_due_statistics",
                       "0005_existing_system_contract", "0006_relay_bookkeeping"]


def test_fresh_install_and_migrated_existing_system_have_the_same_schema(pg_server, blank_db):
    from tests.conftest import _new_database

    fresh = _new_database(pg_server, "template0")
    try:
        assert Cli(fresh.dsn)("db", "init").exit_code == 0
        load_existing_system(blank_db)
        assert Cli(blank_db.dsn)("db", "init").exit_code == 0
        assert schema_dump(fresh) == schema_dump(blank_db)
        for data in ("SELECT * FROM etlctl.kind_steps ORDER BY kind, position",
                     "SELECT * FROM etlctl.job_kinds ORDER BY name", "SELECT * FROM etlctl.step_rules ORDER BY step"):
            assert fresh.sql(data) == blank_db.sql(data)
    finally:
        fresh.drop()


def test_migrations_alone_on_an_empty_database_match_schema_sql(pg_server, blank_db):
    """schema.sql is the truth: replaying every migration from nothing gives the same schema."""
    from etlctl.store import schema
    from tests.conftest import _new_database

    for migration in schema.migrations():
        blank_db.conn.execute(migration.sql)
    fresh = _new_database(pg_server, "template0")
    try:
        fresh.conn.execute(schema.fresh_schema())
        assert schema_dump(fresh) == schema_dump(blank_db)
    finally:
        fresh.drop()


def test_rows_that_break_the_one_running_rule_are_reported_and_the_rest_applies(blank_db):
    load_existing_system(blank_db)
    blank_db.sql("""INSERT INTO etl_jobs (job_name, tenant_id, integration_id, status)
                    VALUES ('Jira again', 1, 1, '{"overall": "RUNNING", "steps": {}}'),
                           ('Jira third', 1, 1, '{"overall": "RUNNING", "steps": {}}')""")
    rows = snapshot_rows(blank_db)
    cli = Cli(blank_db.dsn)
    result = cli("db", "init")
    assert result.exit_code == 4
    assert result.stdout == "applied migrations: 0001_etlctl_schema, 0003_scheduling, 0004_due_statistics, 0005_existing_system_contract, 0006_relay_bookkeeping\n"
    assert result.stderr == (
        "etlctl: migration 0002_one_running_per_integration not applied: more than one RUNNING job per integration "
        "(integration 1 has RUNNING jobs 5, 6); reset the extra ones (etlctl reset JOB --force) "
        "and run `etlctl db init` again\n"
    )
    assert snapshot_rows(blank_db) == rows
    assert blank_db.value("SELECT to_regclass('etlctl.audit') IS NOT NULL")
    assert not blank_db.value("SELECT to_regclass('etlctl_one_running_per_integration') IS NOT NULL")

    assert cli("reset", 6, "--force").exit_code == 0
    fixed = cli("db", "init")
    assert (fixed.exit_code, fixed.stdout) == (0, "applied migrations: 0002_one_running_per_integration\n")
    assert blank_db.value("SELECT to_regclass('etlctl_one_running_per_integration') IS NOT NULL")


def test_commands_before_init_say_to_run_db_init(blank_db):
    result = Cli(blank_db.dsn)("status")
    assert result.exit_code == 6
    assert re.fullmatch(r"etlctl: the database \(postgres@.*/t_\w+\) has no etlctl schema or has pending migrations: "
                        r"run `etlctl db init`\n", result.stderr), result.stderr


def test_the_database_refuses_a_second_running_job_on_an_integration(db):
    tenant = db.tenant()
    integration = db.integration(tenant)
    db.job("Jira", tenant, integration, status={"overall": "RUNNING", "steps": {}})
    import psycopg

    with pytest.raises(psycopg.errors.UniqueViolation):
        db.job("Jira 2", tenant, integration, status={"overall": "RUNNING", "steps": {}})
    # Jobs without an integration are not constrained by it.
    db.job("Solo 1", tenant, None, status={"overall": "RUNNING", "steps": {}})
    db.job("Solo 2", tenant, None, status={"overall": "RUNNING", "steps": {}})


def test_migration_0005_keeps_what_an_operator_changed(blank_db):
    """An install at 0004 whose operator changed the seeded kinds: 0005 adds the contract's rules
    and kinds, but never undoes an operator's change."""
    from etlctl.store import schema

    load_existing_system(blank_db)
    earlier = [m for m in schema.migrations() if m.name < "0005"]
    for migration in earlier:
        blank_db.conn.execute(migration.sql)
    blank_db.sql("INSERT INTO etlctl.migrations (name) SELECT unnest(%s::text[])", [m.name for m in earlier])
    blank_db.sql("UPDATE etlctl.kind_steps SET display_name = 'Dev status (ours)' WHERE step = 'jira_dev_status'")
    blank_db.sql("UPDATE etlctl.kind_steps SET rule = 'finished' WHERE step = 'github_prs_commits_reviews_comments'")
    blank_db.sql("INSERT INTO etlctl.job_kinds (name) VALUES ('confluence')")
    blank_db.sql("""INSERT INTO etlctl.kind_steps (kind, position, step, rule) VALUES
                    ('confluence', 1, 'confluence_pages', 'finished_or_idle'), ('confluence', 2, 'confluence_spaces', 'finished')""")

    result = Cli(blank_db.dsn)("db", "init")
    assert (result.exit_code, result.stdout) == (0, "applied migrations: 0005_existing_system_contract, 0006_relay_bookkeeping\n")
    steps = blank_db.sql("SELECT kind, position, step, display_name FROM etlctl.kind_steps ORDER BY kind, position")
    assert [(s["kind"], s["step"], s["display_name"]) for s in steps if s["kind"] == "jira"] == [
        ("jira", "jira_projects_and_issue_types", "Projects & Issue Types"),  # the operator's jira kind, as it was
        ("jira", "jira_statuses_and_relationships", "Statuses & Relationships"),
        ("jira", "jira_issues_with_changelogs", "Issues & Changelogs"),
        ("jira", "jira_dev_status", "Dev status (ours)"),
    ]
    assert [s["display_name"] for s in steps if s["kind"] == "github"] == ["Repositories", "PRs, Commits, Reviews & Comments"]
    assert {s["kind"] for s in steps} == {"jira", "github", "confluence", "wex fabric", "wex ad"}
    assert dict((r["step"], r["rule"]) for r in blank_db.sql("SELECT step, rule FROM etlctl.step_rules")) == {
        "confluence_pages": "finished_or_idle",  # the operator's rule, carried over
        "github_prs_commits_reviews_comments": "finished",  # the operator made it stricter: kept
        "jira_dev_status": "finished_or_idle", "github_commits": "finished_or_idle",
        "github_reviews": "finished_or_idle", "github_pull_requests": "finished_or_idle",
    }
    providers = dict((r["name"], r["message_provider"]) for r in blank_db.sql("SELECT name, message_provider FROM etlctl.job_kinds"))
    assert providers == {"jira": "jira", "github": "github", "confluence": None, "wex fabric": None, "wex ad": None}


def test_migration_0006_keeps_the_outbox_as_it_was(blank_db):
    """An install at 0005 with messages claimed, done and pending: 0006 adds the relay's bookkeeping and
    changes no row; the pending one is what a relay publishes next."""
    from etlctl.store import schema

    load_existing_system(blank_db)
    earlier = [m for m in schema.migrations() if m.name < "0006"]
    for migration in earlier:
        blank_db.conn.execute(migration.sql)
    blank_db.sql("INSERT INTO etlctl.migrations (name) SELECT unnest(%s::text[])", [m.name for m in earlier])
    blank_db.sql("""INSERT INTO etlctl.queue (job_id, tenant_id, token, step, queue_name, message, claimed_at,
                                              claimed_by, done_at)
                    VALUES (1, 1, 'a', 's', 'extraction_queue_premium', '{}', now(), 'w1', now()),
                           (1, 1, 'b', 's', 'extraction_queue_premium', '{}', now(), 'w1', NULL),
                           (1, 1, 'c', 's', 'extraction_queue_premium', '{}', NULL, NULL, NULL)""")
    before = blank_db.sql("SELECT * FROM etlctl.queue ORDER BY id")
    result = Cli(blank_db.dsn)("db", "init")
    assert (result.exit_code, result.stdout) == (0, "applied migrations: 0006_relay_bookkeeping\n")
    after = blank_db.sql("SELECT * FROM etlctl.queue ORDER BY id")
    assert [{k: row[k] for k in before[0]} for row in after] == before
    assert {(r["attempts"], r["refusals"], r["published_at"], r["skipped_at"]) for r in after} == {(0, 0, None, None)}
    assert [m["state"] for m in Cli(blank_db.dsn)("queue", "ls", "--json").json()] == ["done", "claimed", "pending"]
    assert blank_db.value("SELECT count(*) FROM etlctl.queue WHERE claimed_at IS NULL AND published_at IS NULL "
                          "AND skipped_at IS NULL AND done_at IS NULL") == 1
