"""A bound, on etlctl's side, on every wait for the server's answer.

The server's own limits (statement_timeout, lock_timeout) end a statement
only while the server runs: they cannot end a wait for a server that is
frozen (a paused VM, storage that hangs), nor a commit that waits for a
synchronous standby that is gone (PostgreSQL does not apply statement_timeout
to that wait, and a cancel would end it by acknowledging a commit the standby
never confirmed). TCP keepalives notice a peer that vanished, never one whose
kernel still answers, and a Unix socket has none.

So each session arms a deadline while it waits for an answer; when it passes,
a watchdog thread (one per process, started on first use) shuts the
connection's socket down. psycopg then sees the connection closed, the waiting
statement fails, and the command exits 6 (nothing half-written: a write is one
statement or one transaction, and the server rolls back what it did not
commit). No cancel request is sent, on purpose (see above).

Time here is CLOCK_MONOTONIC read directly: the tests freeze ``time`` for
etlctl's decisions, and a frozen watchdog would never fire.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator


def _now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class _Watchdog:
    """Sleeps until the earliest armed deadline, and cuts the connection whose deadline passed."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.armed: dict[int, tuple[float, int, Deadline]] = {}  # id(deadline) -> (when, socket fd, deadline)
        self.until: float | None = None  # when the thread wakes next; None: it waits to be told
        self.thread: threading.Thread | None = None

    def arm(self, deadline: Deadline, fileno: int, when: float) -> None:
        with self.lock:
            self.armed[id(deadline)] = (when, fileno, deadline)
            if self.thread is None:
                self.thread = threading.Thread(target=self.run, name="etlctl-deadline", daemon=True)
                self.thread.start()
            # Only an earlier deadline than the one it sleeps towards needs a wake-up: a statement
            # every few milliseconds costs no context switch.
            if self.until is None or when < self.until:
                self.lock.notify()

    def disarm(self, deadline: Deadline) -> None:
        with self.lock:
            self.armed.pop(id(deadline), None)

    def run(self) -> None:
        with self.lock:
            while True:
                if not self.armed:
                    self.until = None
                    self.lock.wait()
                    continue
                key, (when, fileno, deadline) = min(self.armed.items(), key=lambda item: item[1][0])
                left = when - _now()
                if left > 0:
                    self.until = when
                    self.lock.wait(left)
                    continue
                # Still armed under the lock: the session is still waiting on this very socket (its
                # owner disarms under the same lock before the connection can be closed).
                del self.armed[key]
                deadline.expired = True
                _cut(fileno)


def _cut(fileno: int) -> None:
    """Shut the connection's socket down (both ways): a wait on it ends at once, as if the server had
    closed it. A duplicate of the descriptor is closed afterwards; the connection's own stays open."""
    with contextlib.suppress(OSError):
        with socket.socket(fileno=os.dup(fileno)) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()


class Deadline:
    """How long one session waits for an answer before giving the server up: ``seconds``.

    ``fileno`` gives the connection's socket (None when there is none: nothing to arm). Blocks nest
    as the session's calls do: :meth:`waiting` arms for its length, :meth:`paused` (a transaction's
    body, whose statements arm their own) disarms and arms again at its end, for the COMMIT."""

    def __init__(self, seconds: float, fileno) -> None:
        self.seconds = seconds
        self.fileno = fileno
        self.expired = False  # the watchdog cut the connection: the error that follows is this

    def _arm(self) -> None:
        fileno = self.fileno()
        if fileno is not None:
            _WATCHDOG.arm(self, fileno, _now() + self.seconds)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        self._arm()
        try:
            yield
        finally:
            _WATCHDOG.disarm(self)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        _WATCHDOG.disarm(self)
        try:
            yield
        finally:
            self._arm()
