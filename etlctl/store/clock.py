"""The one seam through which etlctl learns the time and waits.

In production "now" is the database's clock: every named query that needs
the time reads ``%(now)s``, which the session fills from :func:`sql_now`, and
``None`` there means the query falls back to the server's ``now()``. Waiting is
a real, interruptible sleep; waiting for an event (``etlctl run`` waiting for
a NOTIFY until its next deadline) is a real wait of at most that long.

Tests install another clock with :func:`use` (for example one driven by
freezegun whose ``sleep`` moves frozen time forward, and whose ``wait`` looks
for an event once, without waiting, then moves frozen time to the end of the
wait), and the database then sees that time instead of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

# until_event(timeout) waits at most `timeout` seconds of real time for an event (a NOTIFY, a signal)
# and says whether one came; with 0 it only looks.
UntilEvent = Callable[[float], bool]


class DatabaseClock:
    """Now is the database server's ``now()``; sleeping really sleeps."""

    def sql_now(self) -> datetime | None:
        return None

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, until_event: UntilEvent, seconds: float) -> bool:
        """Wait until an event comes or ``seconds`` pass; returns whether an event came."""
        return until_event(max(0.0, seconds))


_current: DatabaseClock = DatabaseClock()


def current() -> DatabaseClock:
    return _current


def use(clock: DatabaseClock) -> DatabaseClock:
    """Install ``clock``; returns the previous one so a test can restore it."""
    global _current
    previous, _current = _current, clock
    return previous


def sql_now() -> datetime | None:
    return _current.sql_now()


def sleep(seconds: float) -> None:
    _current.sleep(seconds)


def wait(until_event: UntilEvent, seconds: float) -> bool:
    """Wait for an event (``until_event``) for at most ``seconds``, through the installed clock."""
    return _current.wait(until_event, seconds)
