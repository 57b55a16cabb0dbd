"""`etlctl relay`: the outbox (etlctl.queue) to RabbitMQ, with publisher confirms.

A pass takes the pending messages oldest first, a batch per transaction
(``relay_take`` in sql/queries/relay.sql locks them ``FOR UPDATE SKIP LOCKED``,
so relays on several hosts share the work and never take the same message),
skips those whose run is over, publishes the others and waits for the
broker's confirms, records each outcome (``relay_mark``) and commits. A
message counts as published only once the broker confirmed it; a nack, a
return or no answer leaves it pending, the attempt counted and its reason
recorded, for the next pass. The broker never sees a message the database
does not know: if the broker cannot be reached, the batch's transaction is
rolled back and nothing is marked. Duplicates come only from a relay that
dies between the broker's confirm and its commit: the next pass publishes
that batch again (at most ``batch`` messages).

The pieces are small so that a long-running process (``relay --follow``,
:mod:`etlctl.actions.relay_follow`, and ``etlctl run``) can use them:
:class:`Relay` (the broker side: one connection, its publishing channel, the
queues declared on it), :func:`relay_pass` (one pass on an open session) and
:class:`StopRequests` (SIGINT and SIGTERM acted on between batches, never
inside one).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from etlctl.broker import connection as broker_connection
from etlctl.broker.publisher import Message, Publisher, PublishReport, Status, json_body
from etlctl.broker.settings import BrokerSettings
from etlctl.errors import EtlctlError, Interrupted, Terminated

DEFAULT_BATCH = 200  # messages per transaction: also the most a crash can publish twice

PUBLISHED = "published"
WOULD_PUBLISH = "would publish"  # --dry-run
SKIPPED = "skipped"


@dataclass(frozen=True)
class Handled:
    """One message of a pass, and what became of it."""

    id: int
    job_id: int
    step: str
    phase: str
    token: str
    queue: str | None
    result: str  # published, would publish, skipped, or the broker's answer: nacked, returned, unconfirmed
    reason: str | None = None  # why it was skipped or not confirmed
    attempts: int = 0  # publish attempts so far, this one included

    @property
    def pending(self) -> bool:
        """Still waiting to be published (the broker did not confirm it)."""
        return self.result not in (PUBLISHED, WOULD_PUBLISH, SKIPPED)


@dataclass
class PassReport:
    handled: list[Handled] = field(default_factory=list)
    # What ended the pass early, raised by the caller once the batch is recorded (the broker was lost).
    error: EtlctlError | None = None

    def of(self, *results: str) -> list[Handled]:
        return [h for h in self.handled if h.result in results]

    @property
    def not_confirmed(self) -> list[Handled]:
        return [h for h in self.handled if h.pending]


class Relay:
    """The broker side of a relay: one connection (opened when first needed), its publishing
    channel, and the queues declared on it (each once; again after the broker returned a message)."""

    def __init__(self, settings: BrokerSettings, name: str = "etlctl relay") -> None:
        self.settings = settings
        self.name = name
        self.broker: broker_connection.BrokerConnection | None = None
        self.publisher: Publisher | None = None
        self.declared: set[str] = set()

    def open(self) -> None:
        if self.broker is not None and self.broker.is_open:
            return
        self.close()
        self.broker = broker_connection.connect(self.settings, self.name)
        self.publisher = Publisher(self.broker)

    def publish(self, rows: Sequence[dict]) -> PublishReport:
        """Publish outbox rows (``relay_take``'s) and wait for the broker's answers."""
        self.open()
        try:
            for queue in dict.fromkeys(row["queue_name"] for row in rows):
                if queue not in self.declared:
                    self.publisher.ensure_queue(queue)
                    self.declared.add(queue)
            report = self.publisher.publish([
                Message(row["queue_name"], json_body(row["message"]), str(row["id"]), int(row["stamp"])) for row in rows])
        except EtlctlError:
            self.close()
            raise
        for outcome in report.outcomes:
            if outcome.status is Status.RETURNED:
                self.declared.discard(outcome.message.queue)  # deleted since: declare it again next time
        if report.error is not None:
            self.close()
        return report

    def service(self) -> None:
        """Let the connection do its housekeeping while the relay waits (send and read heartbeats, learn
        of a close by the broker), waiting at most 10 ms for what arrived."""
        if self.broker is not None:
            self.broker.process_events(0.01)

    def close(self) -> None:
        if self.broker is not None:
            self.broker.close()
        self.broker = self.publisher = None
        self.declared = set()


# --- one pass ---------------------------------------------------------------------


def relay_pass(session, relay: Relay | None, *, batch: int = DEFAULT_BATCH, ids: Sequence[int] | None = None,
               on_batch: Callable[[list[Handled]], None] = lambda handled: None,
               stop: StopRequests | None = None) -> PassReport:
    """Every pending message (only ``ids`` when given), oldest first, ``batch`` per transaction.

    On a --dry-run session (``relay`` is then None) each batch is taken and
    judged as usual, nothing is published, and everything is rolled back with
    the session. A lost broker ends the pass after recording the batch it was
    in (``report.error``); a broker that cannot be reached at all raises before
    anything is marked.
    """
    if relay is None and not session.dry_run:
        raise ValueError("relay_pass needs a Relay unless the session is a --dry-run")
    report = PassReport()
    after = 0
    while True:
        if stop is not None:
            stop.check()
        with session.transaction():
            rows = session.all("relay_take", after=after, ids=list(ids) if ids is not None else None, limit=batch)
            if not rows:
                break
            after = rows[-1]["id"]
            handled = [_handled(row, SKIPPED, row["skip_reason"], row["attempts"]) for row in rows if row["skip_reason"]]
            todo = [row for row in rows if not row["skip_reason"]]
            if relay is None:
                handled += [_handled(row, WOULD_PUBLISH, None, row["attempts"]) for row in todo]
                published = PublishReport()
            else:
                published = relay.publish(todo) if todo else PublishReport()
                handled += record(session, todo, published)
        handled.sort(key=lambda h: h.id)
        report.handled += handled
        on_batch(handled)
        if published.error is not None:
            report.error = published.error
            break
        if len(rows) < batch:
            break
    return report


def record(session, rows: Sequence[dict], report: PublishReport) -> list[Handled]:
    """One statement: each message published (confirmed) or still pending, its attempt counted."""
    if not rows:
        return []
    outcomes = {o.message.message_id: o for o in report.outcomes}
    chosen = [outcomes[str(row["id"])] for row in rows]
    marked = {r["id"]: r["attempts"] for r in session.all(
        "relay_mark", ids=[row["id"] for row in rows], published=[o.published for o in chosen],
        errors=[o.reason for o in chosen], refused=[o.status in (Status.NACKED, Status.RETURNED) for o in chosen])}
    return [_handled(row, PUBLISHED if o.published else o.status.value, o.reason, marked.get(row["id"], row["attempts"]))
            for row, o in zip(rows, chosen)]


def _handled(row: dict, result: str, reason: str | None, attempts: int) -> Handled:
    return Handled(row["id"], row["job_id"], row["step"], row["phase"], row["token"], row["queue_name"], result,
                   reason, attempts)


def publish_now(session, settings: BrokerSettings, ids: Sequence[int], *, batch: int = DEFAULT_BATCH,
                on_batch: Callable[[list[Handled]], None] = lambda handled: None) -> PassReport:
    """Publish these messages (those just queued), once, on a connection of their own: what
    schedule-next does right after its commit. Whatever it cannot publish, a relay will."""
    relay = Relay(settings, "etlctl schedule-next")
    try:
        with StopRequests() as stop:
            return relay_pass(session, relay, batch=batch, ids=ids, on_batch=on_batch, stop=stop)
    finally:
        relay.close()


# --- stopping between batches ------------------------------------------------------


class StopRequests:
    """SIGINT and SIGTERM while a relay works, acted on between batches: the batch being published
    is confirmed and recorded first, so that stopping never publishes a message twice. A second
    signal stops at once (the batch's transaction is rolled back: nothing is half-marked, and what
    the broker already confirmed is published again by the next pass)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._request)
        except ValueError:
            pass  # not the main thread: signals keep their handlers, and stop the process as they do
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _request(self, signum, frame) -> None:
        if self.signum is not None:
            self._raise(signum)
        self.signum = signum

    def check(self) -> None:
        if self.signum is not None:
            self._raise(self.signum)

    @staticmethod
    def _raise(signum: int) -> None:
        raise Terminated() if signum == signal.SIGTERM else Interrupted()


# --- what the commands call --------------------------------------------------------


def run_once(session, settings: BrokerSettings | None, *, batch: int = DEFAULT_BATCH,
             on_batch: Callable[[list[Handled]], None] = lambda handled: None) -> PassReport:
    """`etlctl relay`: one pass over the whole outbox, stopping between batches on SIGINT/SIGTERM.
    On a --dry-run session nothing is published (no broker is needed)."""
    from etlctl.errors import NoBrokerConfigured

    if session.dry_run:
        with StopRequests() as stop:
            return relay_pass(session, None, batch=batch, on_batch=on_batch, stop=stop)
    if settings is None:
        raise NoBrokerConfigured()
    relay = Relay(settings)
    try:
        with StopRequests() as stop:
            return relay_pass(session, relay, batch=batch, on_batch=on_batch, stop=stop)
    finally:
        relay.close()
