"""`etlctl doctor`: find the flow document's common issues (and a few more) in
the whole database, each with its cause and the exact command that fixes it.

Checks, in the order they are reported:

- schema not initialised / migrations pending / the partial index missing
- clock skew between this host and the database server over SKEW_LIMIT
- Multiple jobs running: more than one RUNNING job per integration
- Stuck on FINISHED: the reset gave up (at any age), or FINISHED for longer
  than delay + the whole backoff + cool-down with no reset pending, or with
  a pending reset whose deadline passed that long ago (nothing runs the flow)
- Timer keeps retrying: FINISHED, the check fails, and the first check is due
- Next job not starting: READY (or FAILED, RATE_LIMIT_REACHED) and due for
  longer than explain.OVERDUE, yet not started; blocked by a job that has a
  problem itself; next_run further away than its own schedule interval; or
  nothing to queue. Inactive jobs, FAILED jobs waiting for their retry, and
  jobs queued behind a healthy run are notes, not problems.
- RUNNING far longer than the job's own history says is usual (explain.long_run)
- queue messages not done QUEUE_LIMIT after they were queued: never claimed,
  or left over from a run that is over
- malformed status documents

A finding is a "problem" (doctor exits 3) or a "note" (reported, exit 0).
Every check reads; none writes. A check whose objects a pending migration
would create is skipped and says so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from etlctl.oncall import facts as explain
from etlctl.core import lifecycle
from etlctl.core import rules
from etlctl.core import due as scheduling
from etlctl.errors import NotInitialized
from etlctl.core.humanize import clock_time, duration, relative, when

SKEW_LIMIT = 5.0  # seconds
QUEUE_LIMIT = 900.0  # seconds a message may stay unclaimed (or stale) before it is reported
INDEX_MIGRATION = "0002_one_running_per_integration"

PROBLEM = "problem"
NOTE = "note"

TITLES = {
    "schema_not_initialised": "Schema not initialised",
    "migrations_pending": "Migrations pending",
    "index_missing": "Partial index missing",
    "clock_skew": "Clock skew",
    "multiple_running": "Multiple jobs running",
    "stuck_finished": "Stuck on FINISHED",
    "timer_retrying": "Timer keeps retrying",
    "not_starting": "Next job not starting",
    "long_running": "Running far longer than usual",
    "queue_stale": "Queue messages pending too long",
    "malformed_status": "Malformed status document",
}
ORDER = list(TITLES)


def psql(*names: str, **ids: int) -> str:
    """A fix to run by hand: the named statements of sql/queries/oncall.sql with ids filled in."""
    from etlctl.store import queries

    sql = "; ".join(queries.get(name) % {k: int(v) for k, v in ids.items()} for name in names)
    return f'psql -c "{sql}"'


def host_clock() -> float:
    """This host's wall clock (seconds since the epoch): the one place etlctl reads it."""
    return time.time()


@dataclass(frozen=True)
class Fix:
    command: str
    note: str = ""


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    summary: str
    cause: str
    fixes: tuple[Fix, ...]
    job_ids: tuple[int, ...] = ()
    details: dict = field(default_factory=dict)

    @property
    def title(self) -> str:
        return TITLES[self.code]

    def record(self) -> dict:
        return {"code": self.code, "severity": self.severity, "title": self.title, "job_ids": list(self.job_ids),
                "summary": self.summary, "cause": self.cause,
                "fix": [{"command": f.command, "note": f.note} for f in self.fixes], "details": self.details}


@dataclass
class Report:
    now: datetime | None = None
    findings: list[Finding] = field(default_factory=list)
    jobs_checked: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return sum(1 for f in self.findings if f.severity == PROBLEM)

    @property
    def notes(self) -> int:
        return sum(1 for f in self.findings if f.severity == NOTE)

    @property
    def healthy(self) -> bool:
        return self.problems == 0

    def record(self) -> dict:
        return {"healthy": self.healthy, "problems": self.problems, "notes": self.notes, "now": self.now,
                "jobs_checked": self.jobs_checked, "skipped": self.skipped,
                "findings": [f.record() for f in self.findings]}


# --- running the checks ------------------------------------------------------------


def run(session, timings: lifecycle.Timings, clock=None) -> Report:
    from etlctl.store import schema

    report = Report()
    skew = measure_skew(session, clock or host_clock)
    if abs(skew) > SKEW_LIMIT:
        report.findings.append(skew_finding(skew))

    state = session.one("schema_state")
    missing = [name for name, present in (("etlctl schema", state["has_migrations_table"]),
                                          ("etl_jobs", state["has_etl_jobs"]), ("tenants", state["has_tenants"]),
                                          ("integrations", state["has_integrations"])) if not present]
    if missing:
        report.findings.insert(0, Finding(
            "schema_not_initialised", PROBLEM, f"the database has no {', '.join(missing)}",
            "etlctl's schema was never created here (or this is not the ETL database: check --dsn / ETLCTL_DSN)",
            (Fix("etlctl db init", "creates etlctl's schema; on the existing system's database it only adds etlctl's objects"),),
        ))
        report.skipped.append("every other check: the schema is not initialised")
        return _sorted(report)

    pending = schema.pending(session)
    index = session.one("oncall_index")
    conflicts = session.all("running_conflicts")
    if pending:
        report.findings.append(pending_finding(pending, bool(conflicts)))
    if not (index["present"] and index["valid"]):
        report.findings.append(index_finding(index, INDEX_MIGRATION in pending, bool(conflicts)))

    count = session.one("doctor_job_count")
    report.jobs_checked, report.now = count["jobs"], count["now"]
    try:
        # Only the jobs that can have a finding: a few rows of a big database, chosen in SQL.
        candidates = [r["id"] for r in session.all("doctor_candidates", overdue=explain.OVERDUE,
                                                   long_run_floor=explain.LONG_RUN_FLOOR)]
    except NotInitialized:
        candidates = None  # a schema from before the due rule (pending migrations): read every job
    report.findings += examine(session, timings, candidates, conflicts, report.skipped)

    stale = session.all("oncall_queue_stale", older_than=QUEUE_LIMIT)
    report.findings += queue_findings(stale)
    return _sorted(report)


def examine(session, timings: lifecycle.Timings, job_ids: Sequence[int] | None, conflicts: Sequence[dict],
            skipped: list[str]) -> list[Finding]:
    """The findings about these jobs (every job when None)."""
    if job_ids is not None and not job_ids:
        return []
    facts = explain.load(session, job_ids, plans=False)
    by_id = {f.job.id: f for f in facts}
    findings = multiple_running(conflicts, by_id)
    for f in facts:
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


# --- the database ---------------------------------------------------------------------


def skew_finding(skew: float) -> Finding:
    side = "behind" if skew > 0 else "ahead of"
    return Finding(
        "clock_skew", PROBLEM,
        f"this host's clock is {_seconds(abs(skew))} {side} the database server's (limit {SKEW_LIMIT:.0f}s)",
        "etlctl decides with the database's clock, but cron on this host and the workers' timestamps follow their own "
        "clocks: deadlines and next_run drift apart",
        (Fix("timedatectl status", "on this host and on the database server: is NTP (chrony/ntpd) synchronised?"),),
        details={"skew_seconds": round(skew, 3)},
    )


def _seconds(value: float) -> str:
    return f"{value:.1f}s" if value < 60 else duration(value)


def pending_finding(pending: Sequence[str], conflicts: bool) -> Finding:
    fixes = [Fix("etlctl db init", "applies them; safe to run again")]
    if INDEX_MIGRATION in pending and conflicts:
        fixes = [Fix("etlctl db init", f"{INDEX_MIGRATION} is refused while an integration has more than one "
                                       "RUNNING job: fix 'Multiple jobs running' first")]
    return Finding(
        "migrations_pending", PROBLEM, f"{len(pending)} migration{'s' if len(pending) != 1 else ''} not applied: "
        f"{', '.join(pending)}",
        "`etlctl db init` was not run after an upgrade, or a migration was refused", tuple(fixes),
        details={"pending": list(pending)},
    )


def index_finding(index: dict, migration_pending: bool, conflicts: bool) -> Finding:
    what = "is missing" if not index["present"] else "is invalid (a failed build)"
    if migration_pending:
        fixes = (Fix("etlctl db init", "creates it" + (" once only one RUNNING job is left per integration"
                                                       if conflicts else "")),)
        cause = f"migration {INDEX_MIGRATION} is not applied"
    else:
        statements = (["fix_drop_running_index"] if index["present"] else []) + ["fix_create_running_index"]
        fixes = (Fix(psql(*statements),
                     f"SQL, as the schema's owner: {INDEX_MIGRATION} is recorded as applied, so db init will not "
                     "recreate it"),)
        cause = "it was dropped (or its build failed) after its migration was applied"
    return Finding(
        "index_missing", PROBLEM,
        f"the partial unique index etlctl_one_running_per_integration {what}: nothing stops a second RUNNING job "
        "on an integration", cause, fixes, details={"present": index["present"], "valid": index["valid"]},
    )


# --- jobs ------------------------------------------------------------------------------


def multiple_running(conflicts: Sequence[dict], by_id: dict[int, explain.Facts]) -> list[Finding]:
    out = []
    for row in conflicts:
        ids = list(row["job_ids"])
        facts = [by_id[i] for i in ids if i in by_id]
        if not facts:
            continue
        keep = max(facts, key=lambda f: (f.job.last_updated_at or datetime.min.replace(tzinfo=f.now.tzinfo), f.job.id))
        listed = "; ".join(_running_since(f) for f in facts)
        fixes = [Fix(f"etlctl reset {f.job.id} --force",
                     f"warning: discards job {f.job.id}'s run; job {keep.job.id} (the most recently updated) keeps running")
                 for f in facts if f.job.id != keep.job.id]
        fixes.append(Fix("etlctl db init", "creates the index that prevents it, if it is missing"))
        out.append(Finding(
            "multiple_running", PROBLEM,
            f"integration {row['integration_id']} has {len(ids)} RUNNING jobs: {', '.join(str(i) for i in ids)}",
            f"only one job per integration may run; the database did not refuse the second start because the "
            f"one-RUNNING index is missing. {listed}",
            tuple(fixes), tuple(ids), details={"integration_id": row["integration_id"], "keep": keep.job.id},
        ))
    return out


def _running_since(f: explain.Facts) -> str:
    started = f.job.last_run_started_at
    updated = f.job.last_updated_at
    parts = [f"job {f.job.id} ({f.job.job_name})"]
    if started:
        parts.append(f"started {when(started)}")
    if updated:
        parts.append(f"last change {relative(updated, f.now)}")
    return " ".join(parts[:1]) + (": " + ", ".join(parts[1:]) if len(parts) > 1 else "")


def job_findings(f: explain.Facts, timings: lifecycle.Timings) -> list[Finding]:
    out = []
    malformed = malformed_status(f)
    if malformed is not None:
        out.append(malformed)
    if f.job.overall == "FINISHED":
        found = finished_job(f, timings)
        if found is not None:
            out.append(found)
    elif f.job.overall == "RUNNING":
        found = long_running(f)
        if found is not None:
            out.append(found)
    return out


def _step_fixes(f: explain.Facts, then: str) -> list[Fix]:
    token = f.job.token
    fixes = []
    for v in explain.not_done(f):
        if v.verdict == rules.RUNNING:
            tok = f" --token {token}" if token else ""
            fixes.append(Fix(f"etlctl step {f.job.id} {v.step} {v.phase} finished{tok}",
                             f"only if the {v.phase} worker really finished {v.step} (check its logs); {then}"))
    return fixes


def _force_fix(f: explain.Facts) -> Fix:
    return Fix(f"etlctl reset {f.job.id} --force",
               "warning: overrides the check; what did not finish is not redone until the next run")


def finished_job(f: explain.Facts, timings: lifecycle.Timings) -> Finding | None:
    job, now = f.job, f.now
    reset = lifecycle.reset_state(job.status)
    if reset.problem:
        return None  # malformed_status reports it
    done_at = explain.finished_at(f)
    age = (now - done_at).total_seconds() if done_at else None
    passes = job.completion.all_finished
    patience = timings.patience()
    label = job.label()
    overdue = reset.deadline is not None and (now - reset.deadline).total_seconds() > patience
    for_how_long = f"FINISHED for {duration(age)} (since {when(done_at)})" if age is not None else "FINISHED"

    if reset.stage == lifecycle.GAVE_UP or (reset.stage == lifecycle.NOT_STARTED and age is not None and age > patience) \
            or (reset.stage in (lifecycle.CHECK, lifecycle.COOLDOWN) and overdue):
        if reset.stage == lifecycle.GAVE_UP:
            gave = f"at {reset.gave_up_at.strftime('%H:%M')}" if reset.gave_up_at else "(time not recorded)"
            summary = f"{label} {for_how_long}: the reset gave up {gave} and waits for a person"
        elif reset.stage == lifecycle.NOT_STARTED:
            summary = (f"{label} {for_how_long}, longer than the whole reset flow takes ({duration(patience)}), "
                       "with no reset pending")
        else:
            summary = (f"{label} {for_how_long}: its reset was due at {when(reset.deadline)} "
                       f"({relative(reset.deadline, now)}) and nothing has acted on it")
        if passes:
            if reset.stage == lifecycle.GAVE_UP:
                cause = f"every step has finished since the flow gave up ({job.error_message or 'no reason recorded'})"
            else:
                cause = "every step is finished, but nothing runs the reset flow (`etlctl sweep` from cron, or the UI)"
            fixes = [Fix(f"etlctl reset {job.id}", "the check passes: resets it to READY")]
        else:
            cause = explain.blockers_text(f)
            if reset.stage != lifecycle.GAVE_UP:
                cause = f"nothing runs the reset flow, and the check fails: {cause}"
            fixes = _step_fixes(f, f"then `etlctl reset {job.id}`") + [_force_fix(f)]
        if reset.stage != lifecycle.GAVE_UP:
            fixes.append(Fix("etlctl cron --install", "runs schedule-next and sweep every minute, so it does not happen again"))
        return Finding("stuck_finished", PROBLEM, summary, cause, tuple(fixes), (job.id,),
                       details={"reset_stage": reset.stage, "finished_seconds_ago": age, "check_passes": passes})

    if passes:
        return None
    if not (reset.attempt >= 1 or (age is not None and age > timings.delay)):
        return None
    if reset.stage == lifecycle.CHECK and reset.attempt >= 1:
        progress = (f"{reset.attempt} of {timings.checks} checks failed; check {reset.attempt + 1} "
                    f"at {clock_time(reset.deadline)} ({relative(reset.deadline, now)})")
    else:
        progress = "the check fails"
    summary = f"{label} {for_how_long}: {progress}"
    cause = explain.blockers_text(f)
    failed = job.completion.failed
    if failed:
        cause += ": a failed phase cannot finish by waiting, the reset gives up"
        fixes = [_force_fix(f)]
    else:
        verdicts = {v.verdict for v in explain.not_done(f)}
        if rules.RUNNING in verdicts:
            cause += ("; its worker never reported it finished (did it get the completion message with "
                      "last_item=True and last_job_item=True?)")
        elif verdicts & {rules.IDLE, rules.MIXED}:
            cause += "; the run was completed before every step ran"
        fixes = _step_fixes(f, f"then the next check looks again (`etlctl why {job.id}` shows what is left)") + [_force_fix(f)]
    return Finding("timer_retrying", PROBLEM, summary, cause, tuple(fixes), (job.id,),
                   details={"reset_stage": reset.stage, "reset_attempt": reset.attempt,
                            "reasons": list(job.completion.reasons)})


def long_running(f: explain.Facts) -> Finding | None:
    found = explain.long_run(f)
    if found is None:
        return None
    elapsed, limit, usual = found
    job = f.job
    still = explain.blockers_text(f, limit=1)
    return Finding(
        "long_running", PROBLEM,
        f"{job.label()} RUNNING for {duration(elapsed)} (since {when(job.last_run_started_at)})",
        f"{usual}; reported past {duration(limit)}" + (f"; still going: {still}" if still else ""),
        (Fix(f"etlctl why {job.id}", "what the run waits for, and since when"),
         Fix(f"etlctl reset {job.id} --force",
             "warning: only if no worker is on this run any more (check the workers' logs): discards the run")),
        (job.id,), details={"elapsed_seconds": elapsed, "limit_seconds": limit},
    )


def malformed_status(f: explain.Facts) -> Finding | None:
    status, job = f.status, f.job
    problems: list[str] = []
    if not isinstance(status, dict):
        problems.append(f"the status document is {rules.json_type(status)}, not an object")
    else:
        if "steps" not in status:
            problems.append("it has no steps key")
        elif not isinstance(status["steps"], dict):
            problems.append(f"steps is {rules.json_type(status['steps'])}, not an object")
        else:
            for name, body in status["steps"].items():
                verdict = rules.judge_step(name, rules.MUST_FINISH, body)
                if verdict.verdict == rules.MALFORMED:
                    problems.append(verdict.detail)
        reset = lifecycle.reset_state(status)
        if reset.problem:
            problems.append(f"its reset state: {reset.problem}")
    if not problems:
        return None
    overall = job.overall
    in_flight = overall in ("RUNNING", "FINISHED", "FAILED")
    structural = not isinstance(status, dict) or not isinstance(status.get("steps"), dict)
    fixes = []
    if structural and not job.kind:
        fixes.append(Fix("etlctl kinds", f"no kind matches job name {job.job_name!r} or its provider: add one with its "
                                         "steps (see the README), so that a run has steps to follow"))
    if in_flight:
        then = ("then every phase is idle and the reset state clear" if not structural else
                f"the next run rebuilds the steps from kind {job.kind}" if job.kind else
                "once the kind exists, the next run gets its steps")
        fixes.append(Fix(f"etlctl reset {job.id} --force", f"warning: ends the run; {then}"))
    elif job.kind or not structural:
        fixes.append(Fix(f"etlctl status {job.id}", "nothing to run now: the next run sets every phase idle"
                                                    + (f" and rebuilds the steps from kind {job.kind}" if structural else "")))
    return Finding(
        "malformed_status", PROBLEM, f"{job.label()}, {overall or 'no overall'}: {'; '.join(problems)}",
        _writer(job), tuple(fixes), (job.id,), details={"problems": problems},
    )


def _writer(job) -> str:
    """Who wrote the document last, as far as the audit log knows: never another program for etlctl's own write."""
    audited, updated = job.last_audit_at, job.last_updated_at
    if audited is not None and (updated is None or audited >= updated):
        return (f"the latest recorded change to the job is etlctl's own `etlctl {job.last_audit_command}` at "
                f"{when(audited)}, which keeps what it does not own as it finds it (etlctl never repairs a "
                "document): it was already so, or a worker changed it since without recording a time")
    if audited is not None:
        return (f"another program wrote the job after etlctl's latest change (`etlctl {job.last_audit_command}` at "
                f"{when(audited)}): find the writer (etlctl never repairs a document silently)")
    return "another program wrote it (etlctl has never changed this job, and never repairs a document): find the writer"


def not_starting(f: explain.Facts, plan: dict, troubled: set[int]) -> list[Finding]:
    job, now = f.job, f.now
    if plan["overall"] not in scheduling.STARTABLE:
        return []
    found = scheduling.blocker(plan, now)
    due_at = plan["due_at"]
    due_since = due_at if due_at is not None else job.last_updated_at
    overdue = due_since is not None and (now - due_since).total_seconds() > explain.OVERDUE
    label = f"{job.label()} {plan['overall']}"
    since = f"due since {when(due_since)} ({relative(due_since, now)})" if due_since else "due"
    if found is None:
        if not overdue:
            return []
        return [Finding(
            "not_starting", PROBLEM, f"{label}, {since}, not started",
            "nothing started it: `etlctl schedule-next` is not running (cron), or it fails (see its log)",
            (Fix("etlctl schedule-next", "starts the due jobs now"),
             Fix("etlctl cron --install", "runs schedule-next and sweep every minute")),
            (job.id,), details={"blocked_by": None},
        )]
    code = found.code
    if code == "inactive":
        if due_at is not None and due_at > now:
            return []
        fixes = []
        if job.active is not True:
            fixes.append(Fix(psql("fix_activate_job", id=job.id), "only if it was deactivated by mistake"))
        if plan["integration_id"] is not None and plan["integration_active"] is not True:
            fixes.append(Fix(psql("fix_activate_integration", id=plan["integration_id"]),
                             "only if it was deactivated by mistake"))
        if plan["tenant_active"] is not True:
            fixes.append(Fix(psql("fix_activate_tenant", id=job.tenant_id),
                             "only if it was deactivated by mistake"))
        return [Finding("not_starting", NOTE, f"{label}, {since}, will not start: {found.text}",
                        "schedule-next starts only jobs whose job, integration and tenant are active "
                        "(a deliberate choice, or a mistake: etlctl cannot tell)",
                        tuple(fixes), (job.id,), details={"blocked_by": code})]
    if code == "retry":
        return [Finding("not_starting", NOTE, f"{label}: {found.text}",
                        f"its last run failed: {job.error_message or 'no error recorded'} (retries so far: {job.retry_count or 0})",
                        (Fix(f"etlctl why {job.id}", "nothing to do: schedule-next retries it then"),),
                        (job.id,), details={"blocked_by": code})]
    if code == "next_run":
        interval = (plan["schedule_interval_minutes"] or 0) * 60
        ahead = (due_at - now).total_seconds()
        if ahead <= interval + explain.OVERDUE:
            return []
        return [Finding(
            "not_starting", PROBLEM,
            f"{label}: next_run is {when(due_at)}, {duration(ahead)} away, but it runs every {duration(interval)}",
            "next_run was set further ahead than a reset would set it; naive times written in another zone than "
            "--db-timezone (ETLCTL_DB_TIMEZONE) look hours off",
            (Fix(psql("fix_clear_next_run", id=job.id),
                 "makes it due now, only if next_run is wrong"),),
            (job.id,), details={"blocked_by": code, "next_run": due_at},
        )]
    if code == "busy":
        if not overdue:
            return []
        blocker_id = plan["busy_job_id"]
        if blocker_id in troubled:
            return [Finding(
                "not_starting", PROBLEM, f"{label}, {since}, blocked: {found.text}",
                f"job {blocker_id} has a problem of its own (reported here): it holds integration {plan['integration_id']}",
                (Fix(f"etlctl why {blocker_id}", f"fix job {blocker_id} first; this one starts after it is reset"),),
                (job.id,), details={"blocked_by": code, "busy_job_id": blocker_id},
            )]
        return [Finding("not_starting", NOTE, f"{label}, {since}, waits: {found.text}",
                        "one job per integration at a time: it starts after that job is reset to READY",
                        (Fix(f"etlctl why {blocker_id}", "when that one will be done"),),
                        (job.id,), details={"blocked_by": code, "busy_job_id": blocker_id})]
    if code == "no_steps":
        return [Finding("not_starting", PROBLEM, f"{label}: it can never start: {found.text}",
                        "schedule-next queues a run's first step; this job has none",
                        (Fix("etlctl kinds", "define the kind's steps in etlctl.kind_steps (see the README)"),),
                        (job.id,), details={"blocked_by": code})]
    if code == "no_message":
        return [Finding("not_starting", PROBLEM, f"{label}: it can never start: {found.text}",
                        "schedule-next starts a run only with a first message a worker accepts "
                        "(etlctl.job_kinds.message_provider)",
                        (Fix("etlctl kinds", "give the kind its message once a worker takes it (see the README), "
                                             "or deactivate the job"),),
                        (job.id,), details={"blocked_by": code})]
    return []


def queue_findings(rows: Sequence[dict]) -> list[Finding]:
    if not rows:
        return []
    now = rows[0]["now"]
    total = rows[0]["total"]
    stale = [r for r in rows if not (r["job_exists"] and r["current_run"])]
    unclaimed = [r for r in rows if r["job_exists"] and r["current_run"] and r["claimed_at"] is None]
    out = []
    if unclaimed:
        oldest = unclaimed[0]
        out.append(Finding(
            "queue_stale", PROBLEM,
            f"{len(unclaimed)} message{'s' if len(unclaimed) != 1 else ''} of current runs never claimed; the oldest, "
            f"{oldest['id']} (job {oldest['job_id']} {oldest['step']} {oldest['phase']}), was queued "
            f"{relative(oldest['created_at'], now)}",
            f"no worker or relay takes {', '.join(sorted({r['phase'] for r in unclaimed}))} messages: are they running?",
            (Fix("etlctl queue ls --pending", "the messages waiting"),),
            tuple(sorted({r["job_id"] for r in unclaimed})), details={"message_ids": [r["id"] for r in unclaimed]},
        ))
    if stale:
        shown = stale[:10]
        fixes = tuple(Fix(f"etlctl queue done {r['id']}", f"job {r['job_id']} {r['step']} {r['phase']}, run {r['token']}")
                      for r in shown)
        more = f" (and {len(stale) - len(shown)} more)" if len(stale) > len(shown) else ""
        out.append(Finding(
            "queue_stale", PROBLEM,
            f"{len(stale)} message{'s' if len(stale) != 1 else ''} of runs that are over (or of deleted jobs) never "
            f"done{more}",
            "the run they belong to ended (reset, forced or restarted) before a worker finished them; "
            "a worker that takes one now works for nothing",
            fixes, tuple(sorted({r["job_id"] for r in stale})), details={"message_ids": [r["id"] for r in stale]},
        ))
    if total > len(rows) and out:
        out[-1].details["more_not_listed"] = total - len(rows)
    return out
