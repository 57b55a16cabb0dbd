"""The completion check's look at RabbitMQ: does a message of the run still wait in a queue?

The existing reset scheduler waits while a message carrying the run's token is
still in the tenant's extraction, transform or embedding queue
(``<kind>_queue_<tier>``). With a broker configured, ``check``,
``wait-and-reset`` and ``sweep`` do the same. The look is taken only when the
steps alone say the job is finished (otherwise it is not finished anyway), and
its findings go to the rule as data (``Job.queued``, ``rules.evaluate``'s
``queued``): the rule stays pure, and without a broker nothing changes.

One job (check, wait-and-reset): each of its three queues is peeked
(:func:`etlctl.broker.peek.peek`), stopping at the first message of the run.
Many jobs (a sweep): each queue is scanned once per pass for every token in it
(:func:`etlctl.broker.peek.scan`), however many jobs it judges. Both give every
message back where it was. A peek that stopped at its limit (a deep queue)
cannot rule a message out: the job counts as not finished, and the reason
says why.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from etlctl.broker import connection as broker_connection
from etlctl.broker.peek import DEFAULT_PEEK_LIMIT, ScanResult, peek, scan
from etlctl.broker.settings import BrokerSettings
from etlctl.core import lifecycle
from etlctl.core.job import Job
from etlctl.errors import BrokerError, BrokerUnavailable, EtlctlError

T = TypeVar("T")
QUEUE_KINDS = ("extraction", "transform", "embedding")
DEFAULT_TIER = "premium"  # tenants.tier's default in the existing system


def queues_of(tier: str | None) -> list[str]:
    """The queues where a tenant's work waits: <kind>_queue_<tier>."""
    return [f"{kind}_queue_{tier or DEFAULT_TIER}" for kind in QUEUE_KINDS]


def needs_look(job: Job) -> bool:
    """Only a job its steps call finished, with a run token to look for."""
    return job.completion.all_finished and isinstance(job.token, str) and bool(job.token)


def waits(queue: str, holds: bool | None, looked_at: int) -> str | None:
    """The reason a queue keeps the run from finishing, or None."""
    if holds:
        return f"a message of this run still waits in {queue}"
    if holds is None:
        return f"{queue} holds more than the {looked_at} messages looked at: one of this run may wait there"
    return None


class QueueLook:
    """One command's look at the queues, on a connection opened when first needed."""

    def __init__(self, settings: BrokerSettings, limit: int = DEFAULT_PEEK_LIMIT) -> None:
        self.settings = settings
        self.limit = limit
        self.broker: broker_connection.BrokerConnection | None = None
        self.scans: dict[str, ScanResult] = {}
        self.error: EtlctlError | None = None  # a sweep's: the broker could not be reached for some jobs
        self.unjudged: list[int] = []  # ... and those jobs, left for the next pass

    def _on_broker(self, work: Callable[[broker_connection.BrokerConnection], T]) -> T:
        """``work`` on the look's connection, opened when first needed. Between two checks of `check
        --retry` or wait-and-reset minutes pass with no heartbeat, and the broker may have dropped a
        connection that pika still calls open: a failure on a connection used before is tried again,
        once, on a new one."""
        reused = self.broker is not None and self.broker.is_open
        if not reused:
            self.close()
            self.broker = broker_connection.connect(self.settings, "etlctl check")
        try:
            return work(self.broker)
        except (BrokerUnavailable, BrokerError):
            self.close()
            if not reused:
                raise
        self.broker = broker_connection.connect(self.settings, "etlctl check")
        return work(self.broker)

    def judged(self, job: Job) -> Job:
        """The job judged with what its queues hold (one peek per queue). Raises BrokerUnavailable."""
        if not needs_look(job):
            return job
        found = []
        for queue in queues_of(job.tenant_tier):
            result = self._on_broker(lambda broker: peek(broker, queue, job.token, self.limit))
            reason = waits(queue, True if result.found else (False if result.complete else None), result.looked_at)
            if reason:
                found.append(reason)
        return dataclasses.replace(job, queued=tuple(found)) if found else job

    def judged_by_scan(self, job: Job) -> Job:
        """The same from scans of each queue, taken once and kept for the rest of the pass."""
        if not needs_look(job):
            return job
        found = []
        for queue in queues_of(job.tenant_tier):
            if queue not in self.scans:
                self.scans[queue] = self._on_broker(lambda broker: scan(broker, queue, self.limit))
            result = self.scans[queue]
            reason = waits(queue, result.holds(job.token), result.looked_at)
            if reason:
                found.append(reason)
        return dataclasses.replace(job, queued=tuple(found)) if found else job

    def rejudge(self, jobs: Sequence[Job], decisions: Sequence[lifecycle.Decision],
                timings: lifecycle.Timings) -> tuple[list[Job], list[lifecycle.Decision]]:
        """A sweep's batch: the decisions that would reset a job (or start its cool-down) taken again
        with what the queues hold. A job whose queues cannot be looked at is left out of this pass."""
        kept_jobs, kept = [], []
        for job, decision in zip(jobs, decisions):
            if decision.action in (lifecycle.RESET, lifecycle.START_COOLDOWN):
                if self.error is not None:  # one failure is enough: no connect timeout per job
                    self.unjudged.append(job.id)
                    continue
                try:
                    seen = self.judged_by_scan(job)
                except (BrokerUnavailable, BrokerError) as exc:
                    self.error = self.error or exc
                    self.unjudged.append(job.id)
                    self.close()
                    continue
                if seen.queued:
                    job = seen
                    decision = lifecycle.decide(job.status, job.rules, job.now, timings, job.finished_at,
                                                queued=job.queued)
            kept_jobs.append(job)
            kept.append(decision)
        return kept_jobs, kept

    def close(self) -> None:
        if self.broker is not None:
            self.broker.close()
            self.broker = None


@contextlib.contextmanager
def looking(settings: BrokerSettings | None, limit: int = DEFAULT_PEEK_LIMIT) -> Iterator[QueueLook | None]:
    """A look for one command, closed at the end; None without a broker (the check stays as it is)."""
    if settings is None:
        yield None
        return
    look = QueueLook(settings, limit)
    try:
        yield look
    finally:
        look.close()
