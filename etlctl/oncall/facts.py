"""What etlctl knows about jobs, read at one instant, for `why` and `doctor`.

:func:`load` gathers the facts (read-only queries of ``sql/queries/oncall.sql``:
the job, the scheduler's view of it, the latest audited change of each phase,
its run history). The phrases below are the sentences `why`
(:mod:`etlctl.oncall.why`) and `doctor` both say about those facts, so that
the two never describe the same job differently. Nothing here decides: the
completion rule is :func:`etlctl.core.rules.evaluate`, the reset flow is
:mod:`etlctl.core.lifecycle` and the due rule is :mod:`etlctl.core.due`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from etlctl.core import lifecycle
from etlctl.core import rules
from etlctl.core.job import Job
from etlctl.core.humanize import clock_time, duration, relative

# A due job not started this long after it became due: schedule-next (every
# minute from cron) should have started it.
OVERDUE = 300.0
# A RUNNING job is "far longer than usual" past max(FACTOR x its median run, FLOOR);
# with no completed run to compare with, past NO_HISTORY.
LONG_RUN_FACTOR = 3.0
LONG_RUN_FLOOR = 1800.0
LONG_RUN_NO_HISTORY = 86400.0


@dataclass(frozen=True)
class PhaseChange:
    """The latest audited change of one phase in the job's current run."""

    value: str | None
    at: datetime
    command: str
    host: str
    db_user: str


@dataclass(frozen=True)
class RunHistory:
    runs: int
    median: float
    longest: float


@dataclass(frozen=True)
class Facts:
    """What etlctl knows about one job, read at one instant."""

    job: Job
    plan: Mapping | None = None  # the schedule_plan row (the scheduler's facts)
    changes: Mapping[tuple[str, str], PhaseChange] = field(default_factory=dict)
    history: RunHistory | None = None

    @property
    def now(self) -> datetime:
        return self.job.now

    @property
    def status(self) -> object:
        return self.job.status


# --- facts ---------------------------------------------------------------------


def load(session, job_ids: Sequence[int] | None = None, *, plans: bool = True) -> list[Facts]:
    """Facts for these jobs (every job when None), in id order."""
    ids = list(job_ids) if job_ids is not None else None
    jobs = [Job.from_row(row) for row in session.all("oncall_jobs", job_ids=ids)]
    if not jobs:
        return []
    plan = {row["id"]: row for row in session.all("schedule_plan", job_ids=ids, tenant=None, limit=None)} if plans else {}
    in_flight = [j.id for j in jobs if j.overall in ("RUNNING", "FINISHED")]
    running = [j.id for j in jobs if j.overall == "RUNNING"]
    changes: dict[int, dict] = {}
    if in_flight:
        for row in session.all("oncall_phase_changes", job_ids=in_flight):
            changes.setdefault(row["job_id"], {})[(row["step"], row["phase"])] = PhaseChange(
                row["value"], row["at"], row["command"], row["host"], row["db_user"])
    history: dict[int, RunHistory] = {}
    if running:
        for row in session.all("oncall_run_history", job_ids=running):
            history[row["job_id"]] = RunHistory(int(row["runs"]), float(row["median_seconds"]), float(row["max_seconds"]))
    return [Facts(j, plan.get(j.id), changes.get(j.id, {}), history.get(j.id)) for j in jobs]


# --- phrases shared by why and doctor -------------------------------------------------------


def blocker_phrase(verdict: rules.StepVerdict) -> str:
    """'jira_dev_status.embedding still running', for one step that is not done."""
    if verdict.verdict == rules.RUNNING:
        return f"{verdict.step}.{verdict.phase} still running"
    if verdict.verdict == rules.FAILED:
        return f"{verdict.step}.{verdict.phase} failed"
    if verdict.verdict == rules.IDLE:
        return f"{verdict.step} not started (all phases idle)"
    return verdict.detail


def not_done(facts: Facts) -> list[rules.StepVerdict]:
    return [v for v in facts.job.completion.steps if not v.done]


def since_phrase(facts: Facts, verdict: rules.StepVerdict) -> str:
    """Since when a phase is in its state: its audit row, else the job's last update."""
    body = (rules.document_steps(facts.status) or {}).get(verdict.step)
    current = body.get(verdict.phase) if isinstance(body, Mapping) and verdict.phase else None
    change = facts.changes.get((verdict.step, verdict.phase)) if verdict.phase else None
    now = facts.now
    if change is not None and change.value == current:
        return (f"since {clock_time(change.at)} ({relative(change.at, now)}; set by `etlctl {change.command}` "
                f"on {change.host} as {change.db_user})")
    started = facts.job.last_run_started_at
    if current == "idle" and started is not None and lifecycle.known(started):
        # Every phase is idle from the start of a run: it has not moved since.
        return f"(idle since the run started at {clock_time(started)}, {relative(started, now)})"
    updated = facts.job.last_updated_at
    audited = facts.job.last_audit_at
    if updated is None or (audited is not None and audited >= updated):
        # Set outside etlctl, and etlctl's own writes (the reset flow's) came after: no record of when.
        return "(set outside etlctl: when is not recorded)"
    return f"(no change to the job since {clock_time(updated)}, {relative(updated, now)})"


def blockers_text(facts: Facts, with_since: bool = True, limit: int = 6) -> str:
    items = not_done(facts)
    if not items:
        # Nothing step by step (no steps at all, or steps that are not an object): the document's own words.
        completion = facts.job.completion
        return "; ".join(r for r in completion.reasons if not r.startswith("overall is"))
    parts = []
    for verdict in items[:limit]:
        phrase = blocker_phrase(verdict)
        parts.append(f"{phrase} {since_phrase(facts, verdict)}" if with_since else phrase)
    if len(items) > limit:
        parts.append(f"and {len(items) - limit} more")
    return "; ".join(parts)


def finished_at(facts: Facts) -> datetime | None:
    return facts.job.finished_at or facts.job.last_updated_at


def long_run(facts: Facts) -> tuple[float, float, str] | None:
    """(elapsed, limit, usual) when a RUNNING job runs far longer than usual, else None."""
    started = facts.job.last_run_started_at
    if facts.job.overall != "RUNNING" or started is None:
        return None
    elapsed = (facts.now - started).total_seconds()
    if facts.history is not None and facts.history.runs > 0:
        limit = max(LONG_RUN_FACTOR * facts.history.median, LONG_RUN_FLOOR)
        usual = (f"its last {facts.history.runs} run{'s' if facts.history.runs != 1 else ''} took "
                 f"{duration(facts.history.median)} (median), {duration(facts.history.longest)} at most")
    else:
        limit = LONG_RUN_NO_HISTORY
        usual = "no completed run in the audit to compare with"
    return (elapsed, limit, usual) if elapsed > limit else None


