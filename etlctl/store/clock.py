"""The one seam through which etlctl learns the time and waits.

In production "now" is the database's clock: every named query that needs
the time reads ``%(now)s``, which the session fills from :func:`sql_now`, and
``None`` there means the query falls back to the server's ``now()``. Waiting is
a real, interruptible sleep.

Tests install another clock with :func:`use` (for example one driven by
freezegun whose ``sleep`` moves frozen time forward), and the database then
sees that time instead of its own.
"""

from __future__ import annotations

import time
from datetime import datetime


class DatabaseClock:
    """Now is the database server's ``now()``; sleeping really sleeps."""

    def sql_now(self) -> datetime | None:
        return None

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


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
