"""`etlctl relay --follow`: the relay as a long-running process.

A pass (:func:`etlctl.actions.relay.relay_pass`), then a wait for the NOTIFY
that the transactions queueing a message send on ``etlctl_queue`` (at their
commit), or for ``poll`` seconds, whichever comes first; and again, until
SIGINT or SIGTERM. While it waits it services the broker connection every
second, so that its heartbeats go on. A lost database or broker is said once
per outage, retried with backoff, and said again when it is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from etlctl.actions.relay import DEFAULT_BATCH, Handled, Relay, StopRequests, relay_pass
from etlctl.broker.settings import BrokerSettings
from etlctl.core.humanize import duration
from etlctl.errors import BrokerError, BrokerUnavailable, Busy, DatabaseUnavailable, EtlctlError
from etlctl.store import clock

DEFAULT_POLL = 5.0  # seconds between looks at the outbox when no NOTIFY comes
WAIT_SLICE = 1.0  # longest single wait: the broker connection is serviced (heartbeats) and signals looked at
BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # seconds between reconnection attempts


class Follower:
    """`etlctl relay --follow`: a pass, then wait for a NOTIFY on etlctl_queue (or ``poll`` seconds),
    and again, until stopped. A lost database or broker is said once per outage, retried with
    backoff and said again when it is back; the broker connection's heartbeats go on while it waits."""

    def __init__(self, open_session: Callable[[], object], relay: Relay, *, batch: int = DEFAULT_BATCH,
                 poll: float = DEFAULT_POLL, on_batch: Callable[[list[Handled]], None] = lambda handled: None,
                 note: Callable[[str], None] = lambda text: None, stop: StopRequests | None = None) -> None:
        self.open_session = open_session
        self.relay = relay
        self.batch = batch
        self.poll = poll
        self.on_batch = on_batch
        self.note = note
        self.stop = stop or StopRequests()
        self.session = None
        self.down: dict[str, float] = {}  # "database" / "broker" -> since when (monotonic)
        self.failures = 0

    def run(self) -> None:
        """Until stopped (Interrupted / Terminated). The first connections must work: a configuration
        that never worked is an error (exit 6 or 8), not an outage to wait out."""
        try:
            self.connect()
            while True:
                try:
                    self.connect()
                    report = relay_pass(self.session, self.relay, batch=self.batch, on_batch=self.on_batch,
                                        stop=self.stop)
                    if report.error is not None:
                        raise report.error
                    self.failures = 0
                    self.wait(self.poll)
                except (DatabaseUnavailable, Busy) as exc:
                    self.lost("database", exc)
                except (BrokerUnavailable, BrokerError) as exc:
                    self.lost("broker", exc)
        finally:
            self.close()

    def connect(self) -> None:
        if self.session is None:
            session = self.open_session()
            try:
                session.run("relay_listen")  # before the pass: nothing committed after it is missed
            except EtlctlError:
                session.close()
                raise
            self.session = session
            self.back("database")
        if self.relay.broker is None or not self.relay.broker.is_open:
            self.relay.open()  # eagerly: an outage shows while waiting, not at the next message
            self.back("broker")

    def wait(self, seconds: float) -> None:
        """Until a NOTIFY comes or ``seconds`` pass, servicing the broker connection meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            self.stop.check()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if any(True for _ in self.session.notifications(timeout=min(WAIT_SLICE, remaining))):
                return  # at once: the pass that follows talks to the broker anyway
            self.relay.service()

    def lost(self, what: str, exc: EtlctlError) -> None:
        if what not in self.down:
            self.down[what] = time.monotonic()
            self.note(f"etlctl: lost the {_LABELS[what]} ({exc.context.get('reason') or exc.message}); "
                      "reconnecting with backoff")
        if what == "database" and self.session is not None:
            self.session.close()
            self.session = None
        if what == "broker":
            self.relay.close()
        self.sleep(BACKOFF[min(self.failures, len(BACKOFF) - 1)])
        self.failures += 1

    def back(self, what: str) -> None:
        since = self.down.pop(what, None)
        if since is not None:
            self.note(f"etlctl: reconnected to the {_LABELS[what]} after {duration(time.monotonic() - since)}")

    def sleep(self, seconds: float) -> None:
        """A backoff wait that still stops at once when asked to."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.stop.check()
            clock.sleep(min(WAIT_SLICE, left))
        self.stop.check()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
        self.relay.close()


_LABELS = {"database": "database", "broker": "message broker"}


def follow(open_session: Callable[[], object], settings: BrokerSettings | None, *, batch: int = DEFAULT_BATCH,
           poll: float = DEFAULT_POLL, on_batch: Callable[[list[Handled]], None] = lambda handled: None,
           note: Callable[[str], None] = lambda text: None) -> None:
    """`etlctl relay --follow`: passes until SIGINT or SIGTERM (raised as Interrupted / Terminated)."""
    from etlctl.errors import NoBrokerConfigured

    if settings is None:
        raise NoBrokerConfigured()
    with StopRequests() as stop:
        Follower(open_session, Relay(settings), batch=batch, poll=poll, on_batch=on_batch, note=note, stop=stop).run()
