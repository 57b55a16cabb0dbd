"""Durations and times as people read and write them. Pure.

In: '30', '1.5', '500ms', '45s', '1m10s', '1h30m', '5h59m', '2d', '1d5h': a
bare number of seconds, or parts from the largest unit to the smallest (d, h,
m, s, ms), each unit at most once. Out: '45s', '1m10s', '3h12m', '2d4h' (the
two largest units), 'in 3h12m', '10:42:10'. Everything :func:`duration`
prints, :func:`parse_duration` reads back (to the precision printed).
"""

from __future__ import annotations

import math
import re
from datetime import datetime

from etlctl.errors import UsageError

DAY = 86400.0
# The largest value each kind of duration flag accepts; above it, exit 2 (README, "Durations").
# The reset flow's waits (--delay, each --backoff step, --cooldown): etlctl.core.lifecycle.MAX_WAIT, one day.
MAX_TIMEOUT = DAY  # --statement-timeout, --lock-timeout, --idle-timeout, --connect-timeout
MAX_CHAIN_GRACE = DAY  # schedule-next --chain-grace
MAX_SINCE = 3650 * DAY  # history --since: ten years back

_UNITS = {"d": DAY, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_ORDER = tuple(_UNITS)
_NUMBER = r"(?:\d+(?:\.\d+)?|\.\d+)"
_BARE = re.compile(_NUMBER)
_PART = re.compile(rf"\s*({_NUMBER})\s*(ms|d|h|m|s)")
_PARTS = re.compile(rf"(?:\s*{_NUMBER}\s*(?:ms|d|h|m|s))+\s*")
EXAMPLES = "30, 1.5, 500ms, 45s, 1m10s, 1h30m or 2d"


def parse_duration(text: str, name: str, maximum: float | None = None) -> float:
    """Seconds from a bare number or from unit parts ('1h30m'); never negative.

    ``maximum`` (seconds) refuses anything longer, naming the limit."""
    raw = str(text).strip()
    if len(raw) > 64:
        raise UsageError(message=f"invalid {name}: {len(raw)} characters is not a duration such as {EXAMPLES}")
    if _BARE.fullmatch(raw):
        seconds = float(raw)
    elif _PARTS.fullmatch(raw):
        seconds, rank = 0.0, -1
        for number, unit in _PART.findall(raw):
            if _ORDER.index(unit) <= rank:
                raise UsageError(message=f"invalid {name} {text!r}: give each unit once, largest first, such as 1h30m")
            rank = _ORDER.index(unit)
            seconds += float(number) * _UNITS[unit]
    else:
        raise UsageError(message=f"invalid {name} {text!r}: expected a duration such as {EXAMPLES}")
    if not math.isfinite(seconds) or (maximum is not None and seconds > maximum):
        if maximum is None:
            raise UsageError(message=f"invalid {name} {text!r}: too long")
        raise UsageError(message=f"invalid {name} {text!r}: the longest allowed is {duration(maximum)}")
    return seconds


def parse_backoff(text: str, name: str = "--backoff", maximum: float | None = None) -> tuple[float, ...]:
    """A comma-separated list of waits, such as '30,60,180,300' or '30s,1m,3m,5m'."""
    parts = str(text).split(",")
    if not str(text).strip() or any(not p.strip() for p in parts):
        raise UsageError(message=f"invalid {name} {text!r}: expected comma-separated durations such as 30,60,180,300")
    return tuple(parse_duration(p, name, maximum) for p in parts)


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
