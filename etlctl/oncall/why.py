"""`etlctl why`: one job in plain words — its state, what it waits for, and
what happens next and when.

:func:`explain_job` reads the job's facts (:mod:`etlctl.oncall.facts`);
:func:`explain` is pure: facts and the time in, sentences out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from etlctl.core import lifecycle, rules, shell
from etlctl.core.due import STARTABLE, blocker
from etlctl.core.humanize import clock_time, duration, relative
from etlctl.core.job import JobRef, short_token
from etlctl.errors import JobNotFound
from etlctl.oncall.facts import (
    OVERDUE,
    Facts,
    blocker_phrase,
    blockers_text,
    finished_at,
    load as load_facts,
    long_run,
    not_done,
    since_phrase,
)
from etlctl.store import jobs, reach


@dataclass(frozen=True)
class Explanation:
    job_id: int
    label: str
    code: str
    state: list[str]
    waiting: list[str]
    next: list[str]
    next_at: datetime | None = None


def explain_job(session, ref: JobRef, timings: lifecycle.Timings) -> Explanation:
    """`etlctl why JOB`: read the job's facts, then explain them."""
    found = load_facts(session, [jobs.resolve(session, ref)])
    if not found:
        raise JobNotFound(ref=ref)
    return explain(found[0], timings, reach.session_conninfo(session))


def explain(facts: Facts, timings: lifecycle.Timings | None = None, conninfo: str | None = None) -> Explanation:
    """State, what it waits for, and what happens next, for one job at facts.now. Each command it
    suggests names the database of ``conninfo`` (as doctor's fixes do), so that it reaches that one
    from any shell."""
    timings = timings or lifecycle.Timings()

    def etlctl(*args: object) -> str:
        return shell.command(*shell.aimed(("etlctl", *map(str, args)), conninfo))

    job = facts.job
    overall = job.overall
    if overall == "RUNNING":
        code, state, waiting, nxt, at = _running(facts, timings)
    elif overall == "FINISHED":
        code, state, waiting, nxt, at = _finished(facts, timings, etlctl)
    elif overall in STARTABLE:
        code, state, waiting, nxt, at = _startable(facts, etlctl)
    else:
        code, state = "unknown_state", [f"overall is {_show(overall)}: not a state etlctl knows"]
        waiting, nxt, at = ["nothing: no etlctl command moves a job from this state"], [
            f"a person decides: `{etlctl('reset', job.id, '--force')}` if it should start over"], None
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
                     "only one may run at a time (doctor says more)")
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


def _finished(facts: Facts, timings: lifecycle.Timings, etlctl):
    job, now = facts.job, facts.now
    done_at = finished_at(facts)
    when = f" {relative(done_at, now)} (at {clock_time(done_at)})" if done_at else ""
    state = [f"FINISHED{when}, {run_label(facts)}"]
    reset = job.reset
    completion = job.completion
    passes = completion.all_finished
    blockers = blockers_text(facts)

    if reset.problem:
        return ("reset_unreadable", state, [f"nothing: its reset state is unreadable ({reset.problem})"],
                [f"the reset flow skips it; a person decides: `{etlctl('reset', job.id)}` "
                 f"(or `{etlctl('reset', job.id, '--force')}`)"], None)

    if reset.stage == lifecycle.GAVE_UP:
        at = f"at {reset.gave_up_at.strftime('%H:%M')}" if reset.gave_up_at else "(time not recorded)"
        if passes:
            reason = f"{job.error_message or 'no reason recorded'}; every step has finished since"
            nxt = [f"nothing happens by itself: run `{etlctl('reset', job.id)}`"]
        else:
            reason = blockers_text(facts, with_since=False)
            nxt = [f"nothing happens by itself: when the steps have finished, run "
                   f"`{etlctl('reset', job.id)}`; "
                   f"or `{etlctl('reset', job.id, '--force')}` (overrides the check)"]
        return "gave_up", state, [f"gave up {at}: {reason}"], nxt, None

    check_line = "every step has finished: the check will pass" if passes else f"not finished: {blockers}"

    if reset.stage == lifecycle.NOT_STARTED:
        due = lifecycle.after(lifecycle.known(done_at) or now, timings.delay)
        if due > now:
            waiting = [f"no reset pending yet: the first check is due at {clock_time(due)} ({relative(due, now)})", check_line]
            nxt = [f"at {clock_time(due)} the sweep from cron (or `{etlctl('wait-and-reset', job.id)}`) checks the steps"]
        else:
            waiting = [f"no reset pending: the first check was due at {clock_time(due)} ({relative(due, now)})", check_line]
            nxt = ["the next sweep from cron (or wait-and-reset) checks it"]
            if (now - due).total_seconds() > OVERDUE:
                nxt.append("it is overdue: nothing runs the reset flow (is sweep in cron? doctor says more)")
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
    # Another writer (the existing reset scheduler retries forever) may have counted past this flow's checks.
    counted = (f"attempt {attempt} of {timings.checks}" if attempt <= timings.checks else
               f"attempt {attempt}, past the {timings.checks} checks of --backoff: this check is the last")
    if deadline > now:
        head = f"reset pending: {counted}, next check at {clock_time(deadline)} ({relative(deadline, now)})"
    else:
        head = (f"reset pending: {counted}, check due since {clock_time(deadline)} "
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
        nxt.append("the next sweep from cron (or wait-and-reset) runs the check")
        if (now - deadline).total_seconds() > OVERDUE:
            nxt.append("it is overdue: nothing runs the reset flow (is sweep in cron? doctor says more)")
    return "reset_pending", state, waiting, nxt, deadline


def _startable(facts: Facts, etlctl):
    job, now = facts.job, facts.now
    overall = job.overall
    plan = facts.plan
    error = f": {job.error_message}" if job.error_message else ""
    if plan is None:
        return ("unknown", [str(overall)], ["scheduling facts unavailable"], [f"run `{etlctl('db', 'init')}`"], None)
    found = blocker(plan, now)
    due_at = plan["due_at"]
    if found is None:
        state = [f"{overall}{error}" if overall != "READY" else "READY"]
        if due_at is None:
            waiting = ["nothing: due now (no next_run)"]
        else:
            waiting = [f"nothing: due since {clock_time(due_at)} ({relative(due_at, now)})"]
        nxt = [f"the next schedule-next from cron starts it: RUNNING, first step {plan['first_step']}"]
        if due_at is not None and (now - due_at).total_seconds() > OVERDUE:
            nxt.append("it is overdue: is schedule-next running from cron? (doctor says more)")
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
        nxt = [f"it starts after job {plan['busy_job_id']} is reset to READY (`{etlctl('why', plan['busy_job_id'])}`)"]
    elif code == "inactive":
        nxt = ["nothing until it is active again (the flag is set outside etlctl)"]
    elif code == "no_steps":
        nxt = [f"nothing until its kind has steps (`{etlctl('kinds')}`)"]
    else:
        nxt = ["nothing: the scheduler does not start it"]
    return code, state, waiting, nxt, None


def _show(value: object) -> str:
    return "missing" if value is None else rules.show(value)


def run_label(facts: Facts) -> str:
    token = facts.job.token
    return f"run {short_token(token)}" if token else "no run token"  # as history shows it; `status JOB`: whole


def give_up_at(state: lifecycle.ResetState, timings: lifecycle.Timings) -> datetime | None:
    """When the flow gives up if every remaining check fails (the deadlines, back to back)."""
    if state.deadline is None:
        return None
    remaining = sum(timings.backoff[state.attempt:]) if state.attempt < len(timings.backoff) else 0.0
    return lifecycle.after(state.deadline, remaining)
