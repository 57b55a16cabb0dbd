"""Settings from flags and environment variables, validated before any connection.

Precedence everywhere: a flag, else its ``ETLCTL_*`` variable, else the default.
A bad value is a :class:`~etlctl.errors.UsageError` (exit 2) naming the flag.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from etlctl.errors import UsageError
from etlctl.lifecycle import Timings

DEFAULT_STATEMENT_TIMEOUT = 30.0
DEFAULT_LOCK_TIMEOUT = 5.0
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 5
DEFAULT_DB_TIMEZONE = "UTC"

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


def timings_from(delay: str | None, backoff: str | None, cooldown: str | None) -> Timings:
    """Flags, else ETLCTL_DELAY / ETLCTL_BACKOFF / ETLCTL_COOLDOWN, else 30 / 30,60,180,300 / 30."""
    defaults = Timings()
    delay = delay if delay is not None else os.environ.get("ETLCTL_DELAY")
    backoff = backoff if backoff is not None else os.environ.get("ETLCTL_BACKOFF")
    cooldown = cooldown if cooldown is not None else os.environ.get("ETLCTL_COOLDOWN")
    return Timings(
        delay=defaults.delay if delay is None else parse_duration(delay, "--delay"),
        backoff=defaults.backoff if backoff is None else parse_backoff(backoff),
        cooldown=defaults.cooldown if cooldown is None else parse_duration(cooldown, "--cooldown"),
    )


@dataclass(frozen=True)
class ConnectionSettings:
    dsn: str | None = None
    db_timezone: str = DEFAULT_DB_TIMEZONE
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT
    verbose: bool = False

    @functools.cached_property
    def home(self) -> Path:
        """Where the embedded server keeps its data; worked out only when a command needs it
        (the default costs importing platformdirs, which a command given --dsn never needs)."""
        return default_home()


def default_home() -> Path:
    """ETLCTL_HOME, else the user's data directory (where the embedded server keeps its data)."""
    explicit = os.environ.get("ETLCTL_HOME")
    if explicit:
        return Path(explicit).expanduser()
    import platformdirs  # only when the default is needed: it costs an import

    return Path(platformdirs.user_data_dir("etlctl", appauthor=False))


def validate_timezone(name: str) -> str:
    """An IANA zone name such as 'UTC' or 'America/New_York'."""
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise UsageError(message=f"invalid --db-timezone {name!r}: expected an IANA zone such as UTC or America/New_York") from None
    return name
