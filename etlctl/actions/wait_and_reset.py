"""`etlctl wait-and-reset`: the browser tab's flow after a job FINISHES, in one
command, through the same durable state as ``sweep`` (see
:mod:`etlctl.core.lifecycle`): before every wait the next deadline is written
down, so a killed run, a rerun or the next sweep carries on where it stopped.

The same durable state lets it survive a lost connection (a failover, a
restart): it reconnects with backoff, to whichever host accepts writes now,
reads the job again and carries on from what the database holds. A write whose
answer was lost either committed whole or not at all; the audit tells which
(its row names this process).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from etlctl.actions.flow import CONCURRENT_RETRIES, apply, transition_for
from etlctl.core import lifecycle, rules
from etlctl.core.humanize import duration
from etlctl.core.job import Job, JobRef
from etlctl.errors import CONFLICT, NOT_FINISHED, OK, Busy, Conflict, DatabaseUnavailable, NotFinished, ReadOnlyDatabase
from etlctl.store import clock
from etlctl.store.jobs import load, resolve

RECONNECT_BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)  # seconds between attempts, the last repeated
RECONNECT_FOR = 300.0  # seconds of trying before exit 6; the next `etlctl sweep` carries on from the durable state


class WaitReporter:
    """What wait-and-reset tells its user while it works; the CLI supplies a view that prints."""

    def decided(self, job: Job, decision: lifecycle.Decision) -> None: ...

    def waiting(self, job: Job, decision: lifecycle.Decision, seconds: float, sleep: Callable[[float], None]) -> None:
        """Wait ``seconds`` with ``sleep`` (the clock seam's), showing whatever helps meanwhile."""
        sleep(seconds)

    def reconnecting(self, job_id: int, reason: str) -> None:
        """The connection was lost; reconnecting with backoff."""

    def reconnected(self, job_id: int, where: str, seconds: float) -> None:
        """Connected again (to ``where``, host:port) after ``seconds``."""


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
    if session.one("session_read_only")["read_only"]:
        # At once, rather than at the first write after a wait (and then reconnecting to the same standby).
        raise ReadOnlyDatabase(where=session.where)
    flow = _Flow(session, job_id, ref, timings, reporter, look)
    while True:
        try:
            outcome = flow.advance()
        except DatabaseUnavailable as exc:
            # Not before the first read: a configuration that never worked is exit 6 at once.
            if not flow.read:
                raise
            reconnect(session, job_id, exc, reporter)
            continue
        if outcome is not None:
            return outcome


class _Flow:
    """wait-and-reset's position between two steps: the run it follows, and the writes it lost to others."""

    def __init__(self, session, job_id: int, ref, timings: lifecycle.Timings, reporter: WaitReporter, look) -> None:
        self.session, self.job_id, self.ref = session, job_id, ref
        self.timings, self.reporter, self.look = timings, reporter, look
        self.read = False  # the job was read once: its run is known
        self.token = None  # that run
        self.lost = 0

    def advance(self) -> WaitOutcome | None:
        """One step from the durable state: read, decide, then wait or write. The outcome when done."""
        session, job_id, ref, timings, reporter, look = (self.session, self.job_id, self.ref, self.timings,
                                                         self.reporter, self.look)
        job = load(session, job_id, ref)
        if not self.read:
            if job.overall != "FINISHED":
                raise Conflict(message=f"{job.label()} is {rules.state_text(job.overall)}, not FINISHED: nothing to wait for")
            self.read, self.token = True, job.token
        elif job.overall != "FINISHED" or job.token != self.token:
            # Ours, if the reset committed before its answer was lost (the audit names this process).
            own = session.one("own_reset", job_id=job_id, token=self.token)
            return WaitOutcome(job, own, by_other=own is None)

        job, decision = _decide(job, timings, look)
        if decision.action == lifecycle.SKIP:
            if decision.state.stage == lifecycle.GAVE_UP:
                raise NotFinished(message=f"{job.label()}: the reset gave up earlier ({job.error_message or 'no reason recorded'}); "
                                          "after fixing it, run `etlctl reset JOB`")
            raise Conflict(message=f"{job.label()}: {decision.reason}")
        if decision.action == lifecycle.WAIT:
            reporter.decided(job, decision)
            reporter.waiting(job, decision, max(0.0, (decision.deadline - job.now).total_seconds()), clock.sleep)
            return None

        changed = apply(session, [transition_for(job, decision)])
        if not changed:
            # Another process moved the job first: read it again. A guard that keeps missing
            # while the job looks unchanged would spin: stop instead.
            self.lost += 1
            if self.lost >= CONCURRENT_RETRIES * 10:
                raise Busy(reason=f"job {job_id} kept changing under wait-and-reset ({self.lost} writes missed)")
            return None
        self.lost = 0
        reporter.decided(job, decision)
        if decision.action == lifecycle.RESET:
            return WaitOutcome(load(session, job_id, ref), changed[0])
        if decision.action == lifecycle.GIVE_UP:
            raise NotFinished(message=f"{job.label()}: {decision.reason}")
        return None


def reconnect(session, job_id: int, lost: DatabaseUnavailable, reporter: WaitReporter) -> None:
    """Open the session again, with backoff, for up to RECONNECT_FOR seconds; then the last error (exit 6)."""
    reporter.reconnecting(job_id, lost.context.get("reason") or lost.message)
    began = time.monotonic()
    attempt = 0
    while True:
        clock.sleep(RECONNECT_BACKOFF[min(attempt, len(RECONNECT_BACKOFF) - 1)])
        attempt += 1
        try:
            session.reopen()
            if session.one("session_read_only")["read_only"]:
                # A DSN without target_session_attrs=read-write reached a standby: wait for it to be
                # promoted, or for another host, as for any host that is down.
                raise ReadOnlyDatabase(where=session.where)
        except DatabaseUnavailable as exc:
            if time.monotonic() - began >= RECONNECT_FOR:
                reason = exc.context.get("reason") or exc.message
                raise DatabaseUnavailable(exc.detail, target=exc.context.get("target", session.target.shown), reason=(
                    f"{reason} (still, after reconnecting for {duration(RECONNECT_FOR)}; the next `etlctl sweep` "
                    f"carries on from job {job_id}'s durable state)")) from exc
            continue
        reporter.reconnected(job_id, session.where, time.monotonic() - began)
        return


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
