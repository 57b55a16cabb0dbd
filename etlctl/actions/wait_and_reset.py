"""`etlctl wait-and-reset`: the browser tab's flow after a job FINISHES, in one
command, through the same durable state as ``sweep`` (see
:mod:`etlctl.core.lifecycle`): before every wait the next deadline is written
down, so a killed run, a rerun or the next sweep carries on where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from etlctl.actions.flow import CONCURRENT_RETRIES, apply, transition_for
from etlctl.core import lifecycle, rules
from etlctl.core.job import Job, JobRef
from etlctl.errors import CONFLICT, NOT_FINISHED, OK, Busy, Conflict, NotFinished
from etlctl.store import clock
from etlctl.store.jobs import load, resolve


class WaitReporter:
    """What wait-and-reset tells its user while it works; the CLI supplies a view that prints."""

    def decided(self, job: Job, decision: lifecycle.Decision) -> None: ...

    def waiting(self, job: Job, decision: lifecycle.Decision, seconds: float, sleep: Callable[[float], None]) -> None:
        """Wait ``seconds`` with ``sleep`` (the clock seam's), showing whatever helps meanwhile."""
        sleep(seconds)


@dataclass(frozen=True)
class WaitOutcome:
    job: Job  # as last read
    reset_row: dict | None  # the reset this command made, if it made it
    by_other: bool = False  # someone else (a sweep, a person) reset or restarted the job
    next_step: lifecycle.Decision | None = None  # --dry-run: the one step decided, instead of the whole flow

    @property
    def exit_code(self) -> int:
        """0; a dry run exits as the real run would, as far as its next step tells (4 not FINISHED, 3 gave up)."""
        if self.next_step is None or self.next_step.action != lifecycle.SKIP:
            return OK
        if self.job.overall != "FINISHED" or self.next_step.state.problem:
            return CONFLICT
        return NOT_FINISHED


def wait_and_reset(session, ref: JobRef | int, timings: lifecycle.Timings, reporter: WaitReporter,
                   look=None) -> WaitOutcome:
    """The UI's flow in one command, durable: each wait is written down first.

    On a --dry-run session it decides and applies only the next step (rolled
    back with the session) and returns instead of waiting. With ``look`` (a
    broker's :class:`~etlctl.actions.peeking.QueueLook`), a check the steps
    pass still fails while a message of the run waits in one of its queues.
    """
    job_id = resolve(session, ref)
    if session.dry_run:
        return _next_step_only(session, job_id, timings, ref, look)
    token = None
    first = True
    lost = 0
    while True:
        job = load(session, job_id, ref)
        if first:
            if job.overall != "FINISHED":
                raise Conflict(message=f"{job.label()} is {rules.state_text(job.overall)}, not FINISHED: nothing to wait for")
            token, first = job.token, False
        elif job.overall != "FINISHED" or job.token != token:
            return WaitOutcome(job, None, by_other=True)

        job, decision = _decide(job, timings, look)
        if decision.action == lifecycle.SKIP:
            if decision.state.stage == lifecycle.GAVE_UP:
                raise NotFinished(message=f"{job.label()}: the reset gave up earlier ({job.error_message or 'no reason recorded'}); "
                                          "after fixing it, run `etlctl reset JOB`")
            raise Conflict(message=f"{job.label()}: {decision.reason}")
        if decision.action == lifecycle.WAIT:
            reporter.decided(job, decision)
            reporter.waiting(job, decision, max(0.0, (decision.deadline - job.now).total_seconds()), clock.sleep)
            continue

        changed = apply(session, [transition_for(job, decision)])
        if not changed:
            # Another process moved the job first: read it again. A guard that keeps missing
            # while the job looks unchanged would spin: stop instead.
            lost += 1
            if lost >= CONCURRENT_RETRIES * 10:
                raise Busy(reason=f"job {job_id} kept changing under wait-and-reset ({lost} writes missed)")
            continue
        lost = 0
        reporter.decided(job, decision)
        if decision.action == lifecycle.RESET:
            return WaitOutcome(load(session, job_id, ref), changed[0])
        if decision.action == lifecycle.GIVE_UP:
            raise NotFinished(message=f"{job.label()}: {decision.reason}")


def _decide(job: Job, timings: lifecycle.Timings, look) -> tuple[Job, lifecycle.Decision]:
    """The next step; one that would reset the job (or start its cool-down) is decided again with
    what its queues hold, when there is a broker to look at."""
    decision = lifecycle.decide(job.status, job.rules, job.now, timings, job.finished_at)
    if look is None or decision.action not in (lifecycle.RESET, lifecycle.START_COOLDOWN):
        return job, decision
    job = look.judged(job)
    if job.queued:
        decision = lifecycle.decide(job.status, job.rules, job.now, timings, job.finished_at, queued=job.queued)
    return job, decision


def _next_step_only(session, job_id: int, timings: lifecycle.Timings, ref, look=None) -> WaitOutcome:
    job = load(session, job_id, ref)
    job, decision = _decide(job, timings, look)
    if decision.writes:
        apply(session, [transition_for(job, decision)])
    return WaitOutcome(job, None, next_step=decision)
