"""`etlctl doctor`: find the flow document's common issues (and a few more) in
the whole database, each with its cause and the exact command that fixes it.

Checks, in the order they are reported:

- schema not initialised / migrations pending / the partial index missing
- clock skew between this host and the database server over SKEW_LIMIT
- an `etlctl run` not seen for more than twice its --max-sleep (nothing when
  no run was ever used, or each one stopped on a signal or was replaced)
- replication that can lose acknowledged writes on failover (asynchronous), a
  synchronous standby missing (every write waits), or this server a standby
  (:mod:`~etlctl.oncall.doctor_replication`); nothing without standbys
- no jobs at all (a note: an empty or wrong database is not a healthy one)
- Multiple jobs running: more than one RUNNING job per integration
- Stuck on FINISHED: the reset gave up (at any age), or FINISHED for longer
  than delay + the whole backoff + cool-down with no reset pending, or with
  a pending reset whose deadline passed that long ago (nothing runs the flow)
- Timer keeps retrying: FINISHED, the check fails, and the first check is due
- Next job not starting: READY (or FAILED, RATE_LIMIT_REACHED) and due for
  longer than facts.OVERDUE, yet not started; blocked by a job that has a
  problem itself; next_run further away than its own schedule interval; or
  nothing to queue. Inactive jobs, FAILED jobs waiting for their retry, and
  jobs queued behind a healthy run are notes, not problems.
- RUNNING far longer than the job's own history says is usual (facts.long_run)
- queue messages not done QUEUE_LIMIT after they were queued: never published
  or claimed (with the relay's last error, when it tried), or left over from a
  run that is over
- with a message broker configured: the broker unreachable (or refusing
  etlctl), a queue the outbox targets missing, a queue no worker consumes
- malformed status documents

A finding is a "problem" (doctor exits 3) or a "note" (reported, exit 0).
Every check reads; none writes. A check whose objects a pending migration
would create is skipped and says so.

This module reads what the checks need and gathers the report. The judging
is pure and lives apart: :mod:`~etlctl.oncall.doctor_database` (the database
as a whole) and :mod:`~etlctl.oncall.doctor_jobs` (each job); the fixes they
propose are :mod:`~etlctl.oncall.doctor_fixes`, the report's types
:mod:`~etlctl.oncall.doctor_report`, and its text and JSON
:mod:`etlctl.views.doctor`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from etlctl.broker.settings import BrokerSettings
from etlctl.core import document, lifecycle
from etlctl.errors import BrokerError, BrokerUnavailable, NotInitialized
from etlctl.oncall import facts
from etlctl.oncall.doctor_broker import queue_findings as broker_queue_findings
from etlctl.oncall.doctor_broker import unreachable_finding
from etlctl.oncall.doctor_database import (
    INDEX_MIGRATION,
    QUEUE_LIMIT,
    RUN_MIGRATION,
    SKEW_LIMIT,
    index_finding,
    pending_finding,
    queue_findings,
    run_findings,
    schema_finding,
    skew_finding,
)
from etlctl.oncall.doctor_jobs import job_findings, malformed_status, multiple_running, not_starting
from etlctl.oncall.doctor_replication import replication_findings
from etlctl.oncall.doctor_fixes import Fix
from etlctl.oncall.doctor_report import NOTE, ORDER, PROBLEM, Finding, Report
from etlctl.store import jobs, reach


def host_clock() -> float:
    """This host's wall clock (seconds since the epoch): the one place etlctl reads it."""
    return time.time()


def run(session, timings: lifecycle.Timings, clock=None, tenant: str | None = None,
        broker: BrokerSettings | None = None) -> Report:
    """The report; with ``tenant``, the findings about that tenant's jobs and queue messages (the
    database-wide checks, such as the schema and clock skew, stay: they concern every tenant).
    With ``broker``, also what the broker says of the queues the outbox targets (that tenant's).
    Every fix names this session's database (without its password): run as printed in another
    terminal, whose ETLCTL_DSN may name another database, it still fixes this one."""
    report = _sorted(_examine_all(session, timings, clock, tenant, broker))
    conninfo = reach.session_conninfo(session)
    report.findings = [replace(f, fixes=tuple(fix.aimed(conninfo) for fix in f.fixes)) for f in report.findings]
    return report


def _examine_all(session, timings: lifecycle.Timings, clock, tenant: str | None,
                 broker: BrokerSettings | None) -> Report:
    from etlctl.store import schema

    report = Report()
    skew = measure_skew(session, clock or host_clock)
    if abs(skew) > SKEW_LIMIT:
        report.findings.append(skew_finding(skew))
    report.findings += replication_findings(session.one("replication_facts"))

    state = session.one("schema_state")
    missing = [name for name, present in (("etlctl schema", state["has_migrations_table"]),
                                          ("etl_jobs", state["has_etl_jobs"]), ("tenants", state["has_tenants"]),
                                          ("integrations", state["has_integrations"])) if not present]
    if missing:
        report.findings.insert(0, schema_finding(missing))
        report.skipped.append("every other check: the schema is not initialised")
        return report

    pending = schema.pending(session)
    index = session.one("oncall_index")
    conflicts = session.all("running_conflicts")
    if pending:
        report.findings.append(pending_finding(pending, bool(conflicts)))
    if not (index["present"] and index["valid"]):
        report.findings.append(index_finding(index, INDEX_MIGRATION in pending, bool(conflicts)))
    if RUN_MIGRATION in pending:
        report.skipped.append("`etlctl run` heartbeats: needs the pending migrations (`etlctl db init`)")
    else:
        report.findings += run_findings(session.all("run_heartbeats"))

    ids = jobs.tenant_ids(session, tenant)
    count = session.one("doctor_job_count", tenant_ids=ids)
    report.jobs_checked, report.now = count["jobs"], count["now"]
    if not report.jobs_checked:
        # "no problems found" alone would read as a healthy fleet
        report.findings.append(NO_JOBS if tenant is None else no_tenant_jobs(tenant))
    try:
        # Only the jobs that can have a finding: a few rows of a big database, chosen in SQL.
        candidates = candidate_ids(session, ids)
    except NotInitialized:
        # A schema from before the due rule (pending migrations): read every job (of the tenant).
        candidates = None if ids is None else [r["id"] for r in session.all("tenant_job_ids", tenant_ids=ids)]
    report.findings += examine(session, timings, candidates, conflicts, report.skipped)

    stale = session.all("oncall_queue_stale", older_than=QUEUE_LIMIT, tenant_ids=ids)
    report.findings += queue_findings(stale)
    if broker is not None:
        report.findings += look_at_broker(session, broker, ids)
    return report


def look_at_broker(session, settings: BrokerSettings, tenant_ids: list[int] | None = None) -> list[Finding]:
    """Reach the broker and ask it about every queue the outbox targets (a passive declare each)."""
    from etlctl.broker import connection

    targets = session.all("oncall_target_queues", tenant_ids=tenant_ids)
    try:
        with connection.connect(settings, "etlctl doctor") as broker:
            seen = {row["queue_name"]: broker.inspect_queue(row["queue_name"]) for row in targets}
    except (BrokerUnavailable, BrokerError) as exc:
        return [unreachable_finding(settings.shown, exc, sum(row["pending"] for row in targets))]
    return broker_queue_findings(settings.shown, targets, seen)


def candidate_ids(session, tenant_ids: list[int] | None, malformed_only: bool = False) -> list[int]:
    """The jobs that can have a finding (a superset), chosen in SQL; with ``malformed_only``, those
    that can be malformed (a superset of doctor's malformed ones, and few)."""
    return [r["id"] for r in session.all(
        "doctor_candidates", overdue=facts.OVERDUE, long_run_floor=facts.LONG_RUN_FLOOR,
        max_bytes=document.MAX_BYTES, max_depth=document.MAX_DEPTH, max_token=lifecycle.MAX_TOKEN_LENGTH,
        max_attempt=lifecycle.MAX_ATTEMPT, max_wait=lifecycle.MAX_WAIT, tenant_ids=tenant_ids,
        malformed_only=malformed_only)]


def malformed_jobs(session, tenant_ids: list[int] | None) -> list[facts.Facts]:
    """The jobs doctor reports as malformed (for metrics): chosen in SQL, so that a healthy fleet's
    FINISHED and FAILED jobs never reach Python, then judged as doctor judges them."""
    ids = candidate_ids(session, tenant_ids, malformed_only=True)
    return [f for f in facts.load(session, ids, plans=False) if malformed_status(f) is not None] if ids else []


def examine(session, timings: lifecycle.Timings, job_ids: Sequence[int] | None, conflicts: Sequence[dict],
            skipped: list[str]) -> list[Finding]:
    """The findings about these jobs (every job when None)."""
    if job_ids is not None and not job_ids:
        return []
    found = facts.load(session, job_ids, plans=False)
    by_id = {f.job.id: f for f in found}
    findings = multiple_running(conflicts, by_id)
    for f in found:
        findings += job_findings(f, timings)

    try:
        plans = session.all("schedule_plan", job_ids=job_ids, tenant=None, limit=None)
    except NotInitialized:
        skipped.append("next job not starting: needs the pending migrations (`etlctl db init`)")
        plans = []
    troubled = {j for finding in findings if finding.severity == PROBLEM for j in finding.job_ids}
    for plan in plans:
        f = by_id.get(plan["id"])
        if f is not None:
            findings += not_starting(f, plan, troubled)
    return findings


NO_JOBS = Finding(
    "no_jobs", NOTE, "etl_jobs is empty: there was nothing to check",
    "nothing has written jobs to this database yet, or it is not the ETL database: check --dsn / ETLCTL_DSN "
    "(or PGHOST/PGDATABASE/PGSERVICE)",
    (Fix(("etlctl", "--dsn", "DSN", "doctor"), "run it against the ETL database (or set ETLCTL_DSN)", template=True),),
)


def no_tenant_jobs(tenant: str) -> Finding:
    return Finding(
        "no_jobs", NOTE, f"tenant {tenant} has no jobs: there was nothing to check",
        "nothing has written this tenant's jobs yet, or it is not the tenant meant: `etlctl status` lists every job",
        (Fix(("etlctl", "status"), "every job, with its tenant"),),
    )


def _sorted(report: Report) -> Report:
    report.findings.sort(key=lambda f: (ORDER.index(f.code), f.job_ids or (0,)))
    return report


def measure_skew(session, clock=None) -> float:
    """Seconds the database's clock is ahead of this host's (negative: behind)."""
    clock = clock or host_clock
    before = clock()
    db_clock = session.one("oncall_clock")["db_clock"]
    after = clock()
    return db_clock.timestamp() - (before + after) / 2
