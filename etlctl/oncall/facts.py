"""`etlctl why`: one job in plain words — its state, what it waits for, and
what happens next and when.

:func:`load` gathers the facts (read-only queries of ``sql/queries/oncall.sql``);
:func:`explain` is pure: facts and the time in, sentences out. It decides
nothing itself: the completion rule is :func:`etlctl.rules.evaluate`, the
reset flow is :mod:`etlctl.lifecycle`, and the scheduler's due rule is
:func:`etlctl.scheduling.blocker`. ``etlctl doctor`` reuses the same facts and
phrases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from etlctl.core import lifecycle
from etlctl.core import rules
from etlctl.core import due as scheduling
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


@dataclass(frozen=True)
class Explanation:
    job_id: int
    label: str
    code: str
    state: list[str]
    waiting: list[str]
    next: list[str]
    next_at: datetime | None = None

    def record(self) -> dict:
        return {"job_id": self.job_id, "job": self.label, "code": self.code, "state": self.state,
                "waiting": self.waiting, "next": self.next, "next_at": self.next_at}


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


# --- phrases shared with doctor -------------------------------------------------------


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


def run_label(facts: Facts) -> str:
    token = facts.job.token
    return f"run {token}" if token else "no run token"


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


def give_up_at(state: lifecycle.ResetState, timings: lifecycle.Timings) -> datetime | None:
    """When the flow gives up if every remaining check fails (the deadlines, back to back)."""
    if state.deadline is None:
        return None
    remaining = sum(timings.backoff[state.attempt:]) if state.attempt < len(timings.backoff) else 0.0
    return lifecycle.after(state.deadline, remaining)


# --- the explanation ----------------------------------------------------------------


def explain(facts: Facts, timings: lifecycle.Timings | None = None) -> Explanation:
    """State, what it waits for, and what happens next, for one job at facts.now."""
    timings = timings or lifecycle.Timings()
    job = facts.job
    overall = job.overall
    if overall == "RUNNING":
        code, state, waiting, nxt, at = _running(facts, timings)
    elif overall == "FINISHED":
        code, state, waiting, nxt, at = _finished(facts, timings)
    elif overall in scheduling.STARTABLE:
        code, state, waiting, nxt, at = _startable(facts)
    else:
        code, state = "unknown_state", [f"overall is {_show(overall)}: not a state etlctl knows"]
        waiting, nxt, at = ["nothing: no etlctl command moves a job from this state"], [
            f"a person decides: `etlctl reset {job.id} --force` if it should start over"], None
    return Explanation(job.id, job.label(), code, state, waiting, nxt, at)


def _running(facts: Facts, timings: lifecycle.Timings):
    job, now = facts.job, facts.now
    started = job.last_run_started_at
    state = [f"RUNNING for {duration((now - started).total_seconds())} ({run_label(facts)}, started {clock_time(started)})"
             if started else f"RUNNING ({run_label(facts)}; start time unknown)"]
    found = long_run(facts)
    if found is not None:
        state.append(f"far longer than usual: {found[2]}")
    plan = facts.plan or {}
    if plan.get("busy_job_id") is not None and plan.get("busy_overall") == "RUNNING":
        state.append(f"integration {job.integration_id} also has job {plan['busy_job_id']} RUNNING: "
                     "only one may run at a time (see `etlctl doctor`)")
    items = not_done(facts)
    steps_known = bool(job.completion.steps)
    if steps_known and not items:
        waiting = ["every step finished: waiting for the embedding worker to complete the run"]
    elif items:
        waiting = [f"{blocker_phrase(v)} {since_phrase(facts, v)}" for v in items[:1]]
        if len(items) > 1:
            waiting.append(f"then {', '.join(v.step for v in items[1:])}")
    else:
        waiting = ["its status document has no steps to follow"]
    nxt = [f"when the run completes: FINISHED, then the reset flow checks it {duration(timings.delay)} later"]
    return "running", state, waiting, nxt, None


def _finished(facts: Facts, timings: lifecycle.Timings):
    job, now = facts.job, facts.now
    done_at = finished_at(facts)
    when = f" {relative(done_at, now)} (at {clock_time(done_at)})" if done_at else ""
    state = [f"FINISHED{when}, {run_label(facts)}"]
    reset = lifecycle.reset_state(job.status)
    completion = job.completion
    passes = completion.all_finished
    blockers = blockers_text(facts)

    if reset.problem:
        return ("reset_unreadable", state, [f"nothing: its reset state is unreadable ({reset.problem})"],
                [f"the reset flow skips it; a person decides: `etlctl reset {job.id}` "
                 f"(or `etlctl reset {job.id} --force`)"], None)

    if reset.stage == lifecycle.GAVE_UP:
        at = f"at {reset.gave_up_at.strftime('%H:%M')}" if reset.gave_up_at else "(time not recorded)"
        if passes:
            reason = f"{job.error_message or 'no reason recorded'}; every step has finished since"
            nxt = [f"nothing happens by itself: run `etlctl reset {job.id}`"]
        else:
            reason = blockers_text(facts, with_since=False)
            nxt = [f"nothing happens by itself: when the steps have finished, run `etlctl reset {job.id}`; "
                   f"or `etlctl reset {job.id} --force` (overrides the check)"]
        return "gave_up", state, [f"gave up {at}: {reason}"], nxt, None

    check_line = "every step has finished: the check will pass" if passes else f"not finished: {blockers}"

    if reset.stage == lifecycle.NOT_STARTED:
        due = lifecycle.after(lifecycle.known(done_at) or now, timings.delay)
        if due > now:
            waiting = [f"no reset pending yet: the first check is due at {clock_time(due)} ({relative(due, now)})", check_line]
            nxt = [f"at {clock_time(due)} `etlctl sweep` (or `etlctl wait-and-reset {job.id}`) checks the steps"]
        else:
            waiting = [f"no reset pending: the first check was due at {clock_time(due)} ({relative(due, now)})", check_line]
            nxt = ["the next `etlctl sweep` (or `etlctl wait-and-reset`) checks it"]
            if (now - due).total_seconds() > OVERDUE:
                nxt.append("it is overdue: nothing runs the reset flow (is `etlctl sweep` in cron? see `etlctl doctor`)")
        return "reset_not_started", state, waiting, nxt, due

    deadline = reset.deadline
    if reset.stage == lifecycle.COOLDOWN:
        waiting = [f"reset pending: cool-down ends at {clock_time(deadline)} ({relative(deadline, now)})"]
        if passes:
            next_run = lifecycle.after(max(deadline, now), (job.schedule_interval_minutes or 0) * 60)
            nxt = [f"then READY; next run about {clock_time(next_run)} "
                   f"({duration((job.schedule_interval_minutes or 0) * 60)} after the reset)"]
        else:
            waiting.append(f"not finished any more: {blockers}")
            nxt = ["the reset flow checks again when the cool-down ends"]
        return "cooldown", state, waiting, nxt, deadline

    attempt = reset.attempt + 1
    if deadline > now:
        head = f"reset pending: attempt {attempt} of {timings.checks}, next check at {clock_time(deadline)} ({relative(deadline, now)})"
    else:
        head = (f"reset pending: attempt {attempt} of {timings.checks}, check due since {clock_time(deadline)} "
                f"({relative(deadline, now)})")
    waiting = [head, check_line]
    if passes:
        nxt = [f"the check passes, then a {duration(timings.cooldown)} cool-down, then READY"]
    elif completion.failed:
        nxt = ["a phase failed: the check gives up at once (waiting cannot help)"]
    else:
        last = give_up_at(reset, timings)
        left = timings.checks - attempt
        if left <= 0:
            nxt = ["if it still fails, this last check gives up"]
        else:
            follow = (f"check {timings.checks} follows" if left == 1 else
                      f"checks {attempt + 1} and {timings.checks} follow" if left == 2 else
                      f"checks {attempt + 1} to {timings.checks} follow")
            nxt = [f"if still not finished, {follow} and the flow gives up at about {clock_time(last)} "
                   f"({relative(last, now)})"]
    if deadline <= now:
        nxt.append("the next `etlctl sweep` (or wait-and-reset) runs the check")
        if (now - deadline).total_seconds() > OVERDUE:
            nxt.append("it is overdue: nothing runs the reset flow (is `etlctl sweep` in cron? see `etlctl doctor`)")
    return "reset_pending", state, waiting, nxt, deadline


def _startable(facts: Facts):
    job, now = facts.job, facts.now
    overall = job.overall
    plan = facts.plan
    error = f": {job.error_message}" if job.error_message else ""
    if plan is None:
        return ("unknown", [str(overall)], ["scheduling facts unavailable"], ["run `etlctl db init`"], None)
    found = scheduling.blocker(plan, now)
    due_at = plan["due_at"]
    if found is None:
        state = [f"{overall}{error}" if overall != "READY" else "READY"]
        if due_at is None:
            waiting = ["nothing: due now (no next_run)"]
        else:
            waiting = [f"nothing: due since {clock_time(due_at)} ({relative(due_at, now)})"]
        nxt = [f"the next `etlctl schedule-next` starts it: RUNNING, first step {plan['first_step']}"]
        if due_at is not None and (now - due_at).total_seconds() > OVERDUE:
            nxt.append("it is overdue: is `etlctl schedule-next` running from cron? (see `etlctl doctor`)")
        return "due", state, waiting, nxt, now
    code = found.code
    if code == "next_run":
        state = [f"{overall}; next_run {relative(due_at, now)}"]
        waiting = [f"next_run at {clock_time(due_at)} ({due_at.strftime('%Y-%m-%d')})"]
        owner = f" if integration {job.integration_id} is idle then" if job.integration_id is not None else ""
        return "not_due", state, waiting, [f"schedule-next starts it at {clock_time(due_at)}{owner}"], due_at
    if code == "retry":
        state = [f"FAILED{error} (retries so far: {job.retry_count or 0})"]
        waiting = [f"retry at {clock_time(due_at)} ({relative(due_at, now)}), "
                   f"{job.retry_interval_minutes} min after its last run"]
        return "retry", state, waiting, [f"schedule-next starts it again at {clock_time(due_at)}"], due_at
    state = [f"{overall}{error}" if overall != "READY" else "READY"]
    waiting = [f"blocked: {found.text}"]
    if code == "busy":
        nxt = [f"it starts after job {plan['busy_job_id']} is reset to READY (`etlctl why {plan['busy_job_id']}`)"]
    elif code == "inactive":
        nxt = ["nothing until it is active again (the flag is set outside etlctl)"]
    elif code == "no_steps":
        nxt = ["nothing until its kind has steps (`etlctl kinds`)"]
    else:
        nxt = ["nothing: the scheduler does not start it"]
    return code, state, waiting, nxt, None


def _show(value: object) -> str:
    return "missing" if value is None else repr(value)
