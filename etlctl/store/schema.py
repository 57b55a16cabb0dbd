"""`etlctl db init`: create etlctl's schema, or migrate a database to it.

- A database with none of the existing system's tables and no etlctl schema
  gets ``sql/schema.sql`` (the truth for a fresh install) and every
  migration is recorded as applied.
- Any other database gets its pending migrations, each in its own
  transaction, recorded in ``etlctl.migrations``. One that a constraint
  refuses (the one-RUNNING-per-integration index over rows that break it)
  is rolled back alone; the others still apply, and the report names the rows
  in the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

from etlctl.errors import Conflict

_REPORT_MARKER = "-- on-conflict-report:"


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def conflict_report(self) -> str | None:
        """The named query that lists the rows in the way, if the file names one."""
        for line in self.sql.splitlines():
            if line.startswith(_REPORT_MARKER):
                return line[len(_REPORT_MARKER):].strip()
        return None


@dataclass
class InitReport:
    fresh: bool = False
    applied: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # migration -> why

    @property
    def ok(self) -> bool:
        return not self.failed


def migrations() -> list[Migration]:
    folder = resources.files("etlctl.sql") / "migrations"
    found = [entry for entry in folder.iterdir() if entry.name.endswith(".sql")]
    return [Migration(e.name[: -len(".sql")], e.read_text(encoding="utf-8")) for e in sorted(found, key=lambda e: e.name)]


def fresh_schema() -> str:
    return (resources.files("etlctl.sql") / "schema.sql").read_text(encoding="utf-8")


def pending(session) -> list[str]:
    """Migrations not yet applied; every one of them when etlctl's schema is absent."""
    state = session.one("schema_state")
    applied = {row["name"] for row in session.all("applied_migrations")} if state["has_migrations_table"] else set()
    return [m.name for m in migrations() if m.name not in applied]


def init(session) -> InitReport:
    """Create or migrate (on a --dry-run session, all of it is rolled back at the end)."""
    report = InitReport()
    session.one("init_lock")
    try:
        state = session.one("schema_state")
        existing = state["has_tenants"] or state["has_integrations"] or state["has_etl_jobs"]
        all_migrations = migrations()
        if not state["has_migrations_table"] and not existing:
            with session.transaction():
                session.script(fresh_schema())
                session.run("record_migrations", names=[m.name for m in all_migrations])
            report.fresh = True
            report.applied = [m.name for m in all_migrations]
            return report

        done = {row["name"] for row in session.all("applied_migrations")} if state["has_migrations_table"] else set()
        for migration in all_migrations:
            if migration.name in done:
                continue
            try:
                with session.transaction():
                    session.script(migration.sql)
                    session.run("record_migrations", names=[migration.name])
            except Conflict as exc:
                report.failed[migration.name] = _explain_conflict(session, migration, exc)
                continue
            report.applied.append(migration.name)
        return report
    finally:
        session.one("init_unlock")


def _explain_conflict(session, migration: Migration, exc: Conflict) -> str:
    if migration.conflict_report != "running_conflicts":
        return exc.message
    rows = session.all("running_conflicts")
    if not rows:
        return exc.message
    listed = "; ".join(
        f"integration {row['integration_id']} has RUNNING jobs {', '.join(str(j) for j in row['job_ids'])}" for row in rows
    )
    return (
        f"more than one RUNNING job per integration ({listed}); "
        "reset the extra ones (etlctl reset JOB --force) and run `etlctl db init` again"
    )
