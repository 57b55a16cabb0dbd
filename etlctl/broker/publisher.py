"""Publishing to the existing system's queues, with publisher confirms.

The contract (existing-system-contract.md, section 1): the default exchange,
routing key = queue name, persistent JSON messages, queues declared durable
with exactly ``x-message-ttl: 86400000``. etlctl adds ``mandatory`` (a message
no queue takes comes back instead of vanishing), a ``message_id``, ``app_id``
``etlctl`` and a ``timestamp``, and waits for the broker's confirms: a message
counts as published only once the broker has confirmed it.

Throughput: messages are sent in a window of up to ``window`` unconfirmed ones
and their confirms are taken as they arrive (one confirm may cover many), instead
of one round trip per message as pika's BlockingChannel does in confirm mode.
pika's BlockingChannel has no API for that, so this module drives the
channel's underlying ``pika.channel.Channel`` (its public ``confirm_delivery``,
``basic_publish`` and ``add_on_return_callback``), reached through
``BlockingChannel._impl``; setup.cfg pins pika below 2 for that reason.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from etlctl.broker.connection import ACCESS_REFUSED, BrokerConnection, QueueInfo
from etlctl.errors import BrokerError, BrokerUnavailable, EtlctlError

CONTRACT_ARGUMENTS = {"x-message-ttl": 86400000}  # 24 h, as the existing workers declare them
# The order in which the existing run-now path writes a first message's fields (existing-system-contract.md
# §2; it publishes json.dumps of a dict built in this order). PostgreSQL's jsonb keeps no order, so the body
# is written again in this one: a kind's own fields (message_extra, such as GitHub's first_item and
# last_item) after `provider`, any other field after those, by name.
MESSAGE_FIELDS_FIRST = ("tenant_id", "integration_id", "job_id", "type", "provider", "first_item", "last_item")
MESSAGE_FIELDS_LAST = ("token", "old_last_sync_date")
APP_ID = "etlctl"
DEFAULT_CONFIRM_TIMEOUT = 30.0  # seconds to wait for the broker's confirms of one batch
DEFAULT_WINDOW = 1000  # unconfirmed messages in flight at most
_WAIT_SLICE = 0.001  # how long one wait for confirms lasts before more messages are sent


class Status(enum.Enum):
    CONFIRMED = "confirmed"  # the broker has it (routed to a queue, persisted as the queue requires)
    NACKED = "nacked"  # the broker refused it (for example a full queue with overflow reject-publish)
    RETURNED = "returned"  # no queue by that name: unroutable, returned because of `mandatory`
    UNCONFIRMED = "unconfirmed"  # no answer: timeout, channel or connection lost, or never sent


@dataclass(frozen=True)
class Message:
    queue: str
    body: bytes
    message_id: str  # unique within one publish() call
    timestamp: int  # seconds since the epoch; the caller's clock (the database's, for the relay)


@dataclass(frozen=True)
class Outcome:
    message: Message
    status: Status
    reason: str | None = None  # why it is not confirmed

    @property
    def published(self) -> bool:
        return self.status is Status.CONFIRMED


@dataclass
class PublishReport:
    """Per message, in the order given, what the broker said; ``error`` is what ended the
    batch early (the connection or channel was lost), to raise once the confirmed ones are recorded."""

    outcomes: list[Outcome] = field(default_factory=list)
    error: EtlctlError | None = None

    @property
    def confirmed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.published]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.published]


@dataclass(frozen=True)
class QueueState:
    name: str
    messages: int
    consumers: int
    contract_arguments: bool  # False: it existed with other arguments and was left as it is


class Publisher:
    """Publishes on one channel of ``broker`` that nothing else uses, in confirm mode."""

    def __init__(self, broker: BrokerConnection, confirm_timeout: float = DEFAULT_CONFIRM_TIMEOUT,
                 window: int = DEFAULT_WINDOW) -> None:
        self.broker = broker
        self.confirm_timeout = confirm_timeout
        self.window = window
        self._channel = None  # pika's Channel (see the module docstring), once open
        self._opening = None  # the channel being put in confirm mode
        self._next_tag = 1
        self._in_flight: dict[int, Message] = {}
        self._results: dict[str, Outcome] = {}
        self._returned: dict[str, str] = {}
        self._channel_error: str | None = None

    # --- queues --------------------------------------------------------

    def ensure_queue(self, name: str) -> QueueState:
        """Declare ``name`` durable with the contract's arguments. A queue that already
        exists with other arguments is checked passively and left alone: declaring it
        with ours would be refused. So is one the user may not configure (its permissions
        are write and read only): it must exist. Runs on the control channel, never the
        publishing one."""
        for _ in range(3):  # again only if someone deletes the queue between our two declares
            declared = self.broker.declare_queue(name, CONTRACT_ARGUMENTS)
            if isinstance(declared, QueueInfo):
                return _state(declared, contract=True)
            info = self.broker.inspect_queue(name)
            if info is not None:
                return _state(info, contract=False)
            if declared == ACCESS_REFUSED:
                raise BrokerError(reason=f"queue {name!r} does not exist, and user {self.broker.settings.user!r} "
                                         f"may not declare it (no configure permission on it): let the workers "
                                         "declare it, or grant configure")
        raise BrokerError(reason=f"queue {name!r} keeps being deleted and declared again with other arguments")

    # --- publishing ----------------------------------------------------

    def publish(self, messages: Sequence[Message]) -> PublishReport:
        """Send ``messages`` and wait (at most ``confirm_timeout``) for the broker's answer to each."""
        ids = [m.message_id for m in messages]
        if len(set(ids)) != len(ids):
            raise ValueError("message ids must be unique within one publish() call")
        report = PublishReport()
        if not messages:
            return report
        self._results, self._returned = {}, {}
        try:
            self._open_channel()
            self._send_all(messages)
        except EtlctlError as exc:
            report.error = exc
            self._lose(f"not confirmed: {exc.message}")
        for message in messages:
            outcome = self._results.get(message.message_id)
            if outcome is None:  # only after an error
                outcome = Outcome(message, Status.UNCONFIRMED, f"not sent: {report.error.message}")
            report.outcomes.append(outcome)
        return report

    def _send_all(self, messages: Sequence[Message]) -> None:
        import pika

        deadline = time.monotonic() + self.confirm_timeout
        channel = self._channel
        for message in messages:
            while len(self._in_flight) >= self.window:
                self._wait(deadline)
            properties = pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json",
                message_id=message.message_id, app_id=APP_ID, timestamp=message.timestamp)
            with self.broker.translating():
                channel.basic_publish(exchange="", routing_key=message.queue, body=message.body,
                                      properties=properties, mandatory=True)
            self._in_flight[self._next_tag] = message
            self._next_tag += 1
        while self._in_flight:
            self._wait(deadline)

    def _wait(self, deadline: float) -> None:
        """Take in the confirms that arrived, waiting a moment for them."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerUnavailable(target=self.broker.settings.shown, reason=(
                f"no confirm within {self.confirm_timeout:g}s (is the broker blocked by a memory or disk alarm?)"))
        self.broker.process_events(min(_WAIT_SLICE, remaining))
        if self._channel_error is not None:
            reason, self._channel_error = self._channel_error, None
            self._channel = None
            raise BrokerError(reason=f"the broker closed the publishing channel: {reason}")

    def _lose(self, reason: str) -> None:
        """Every message still waiting for a confirm is reported unconfirmed, and the channel is
        dropped: a late confirm for one of them must not be taken for a later message's."""
        for message in self._in_flight.values():
            self._results[message.message_id] = Outcome(message, Status.UNCONFIRMED, reason)
        if self._in_flight:
            self._close_channel()
        self._in_flight = {}

    # --- the confirm-mode channel --------------------------------------

    def _open_channel(self) -> None:
        if self._channel is not None and self._channel.is_open:
            return
        impl = self._opening = self.broker.channel()._impl  # pika.channel.Channel: see the module docstring
        selected = []
        # Confirms and returns count only from the channel in use: a late confirm from a channel
        # given up on must not be taken for a message of the next one (delivery tags restart at 1).
        current = lambda: impl is self._channel  # noqa: E731
        with self.broker.translating():
            impl.add_on_return_callback(lambda *args: current() and self._on_return(*args))
            impl.add_on_close_callback(self._on_close)
            impl.confirm_delivery(ack_nack_callback=lambda frame: current() and self._on_confirm(frame),
                                  callback=selected.append)
        deadline = time.monotonic() + self.broker.settings.connect_timeout
        while not selected:
            if self._channel_error is not None or time.monotonic() >= deadline:
                reason, self._channel_error = self._channel_error or "no answer", None
                raise BrokerError(reason=f"the broker did not turn on publisher confirms: {reason}")
            self.broker.process_events(_WAIT_SLICE)
        self._channel, self._opening, self._next_tag, self._in_flight = impl, None, 1, {}

    def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and channel.is_open:
            try:
                channel.close()
            except Exception:  # already closing: nothing more to do here
                pass

    def _on_return(self, _channel, method, properties, _body) -> None:
        # The broker sends basic.return before the basic.ack of the same message.
        self._returned[properties.message_id] = f"unroutable: {method.reply_text} ({method.reply_code})"

    def _on_confirm(self, frame) -> None:
        import pika

        method = frame.method
        tags = ([t for t in self._in_flight if t <= method.delivery_tag] if method.multiple
                else [method.delivery_tag] if method.delivery_tag in self._in_flight else [])
        nacked = isinstance(method, pika.spec.Basic.Nack)
        for tag in tags:
            message = self._in_flight.pop(tag)
            returned = self._returned.pop(message.message_id, None)
            if nacked:
                outcome = Outcome(message, Status.NACKED, "nacked by the broker")
            elif returned is not None:
                outcome = Outcome(message, Status.RETURNED, returned)
            else:
                outcome = Outcome(message, Status.CONFIRMED)
            self._results[message.message_id] = outcome

    def _on_close(self, channel, reason) -> None:
        from pika.exceptions import ChannelClosedByBroker

        # Only the broker's closes matter here: ours are deliberate, and a lost connection
        # surfaces as an error from process_events.
        if isinstance(reason, ChannelClosedByBroker) and channel in (self._channel, self._opening):
            self._channel_error = f"{reason.reply_text} ({reason.reply_code})"

    def close(self) -> None:
        self._close_channel()


def json_body(message: dict) -> bytes:
    """A message's body as the existing system writes it: ``json.dumps`` of its fields in the contract's order."""
    import json

    edges = MESSAGE_FIELDS_FIRST + MESSAGE_FIELDS_LAST
    order = ([k for k in MESSAGE_FIELDS_FIRST if k in message] + sorted(k for k in message if k not in edges)
             + [k for k in MESSAGE_FIELDS_LAST if k in message])
    return json.dumps({key: message[key] for key in order}).encode()


def _state(info: QueueInfo, contract: bool) -> QueueState:
    return QueueState(info.name, info.messages, info.consumers, contract)
