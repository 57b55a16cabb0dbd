"""Durations and times as people read and write them: '30', '2m', '1h' in,
'45s', '1m10s', 'in 3h12m', '10:42:10' out. Pure."""

from __future__ import annotations

import re
from datetime import datetime

from etlctl.errors import UsageError

_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?\s*$")


def parse_duration(text: str, name: str) -> float:
    """Seconds from '30', '1.5', '500ms', '2m' or '1h'. Never negative."""
    match = _DURATION.match(str(text))
    if not match:
        raise UsageError(message=f"invalid {name} {text!r}: expected seconds such as 30, 1.5, 500ms, 2m or 1h")
    return float(match.group(1)) * _UNITS[match.group(2) or ""]


def parse_backoff(text: str, name: str = "--backoff") -> tuple[float, ...]:
    """A comma-separated list of waits, such as '30,60,180,300'."""
    parts = str(text).split(",")
    if not str(text).strip() or any(not p.strip() for p in parts):
        raise UsageError(message=f"invalid {name} {text!r}: expected comma-separated seconds such as 30,60,180,300")
    return tuple(parse_duration(p, name) for p in parts)


def infinity_text(value: datetime) -> str:
    # How etlctl.store.connection loads a database 'infinity' (or a year it cannot hold).
    return "infinity" if value.year == 9999 else "-infinity"


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    if value.year in (1, 9999):
        return infinity_text(value)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def clock_time(value: datetime | None) -> str:
    if value is None:
        return "-"
    if value.year in (1, 9999):
        return infinity_text(value)
    return value.strftime("%H:%M:%S")


def duration(seconds: float) -> str:
    """'45s', '1m10s', '3h12m', '2d4h': the two largest units."""
    seconds = int(round(abs(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def relative(moment: datetime | None, now: datetime) -> str:
    """'in 3h12m', '5m ago' or 'now'."""
    if moment is None:
        return "-"
    if moment.year in (1, 9999):
        return "never" if moment.year == 9999 else "long ago"
    delta = (moment - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    return f"in {duration(delta)}" if delta > 0 else f"{duration(delta)} ago"
