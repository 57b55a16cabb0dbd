"""How to reach the database: the connection settings, validated before any connection.

Precedence everywhere: a flag, else its ``ETLCTL_*`` variable, else the default.
A bad value is a :class:`~etlctl.errors.UsageError` (exit 2) naming the flag.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from etlctl.errors import UsageError

DEFAULT_STATEMENT_TIMEOUT = 30.0
DEFAULT_LOCK_TIMEOUT = 5.0
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 5
# libpq waits whole seconds, and at least 2: it reads connect_timeout=1 as 2.
MIN_CONNECT_TIMEOUT = 2
DEFAULT_DB_TIMEZONE = "UTC"
# Over TCP (libpq ignores them on a Unix socket), unless the DSN sets them: a server host that vanished (power
# lost, network cut) is given up after 10 s of silence and 3 unanswered probes 5 s apart, and data it never
# acknowledges after 30 s, rather than after the kernel's defaults (2 hours of silence; 15 minutes of resends).
TCP_PARAMETERS = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5", "keepalives_count": "3",
                  "tcp_user_timeout": "30000"}


@dataclass(frozen=True)
class ConnectionSettings:
    dsn: str | None = None
    db_timezone: str = DEFAULT_DB_TIMEZONE
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT

    @functools.cached_property
    def home(self) -> Path:
        """Where the embedded server keeps its data; worked out only when a command needs it
        (the default costs importing platformdirs, which a command given --dsn never needs)."""
        return default_home()


ROOT_HOME = Path("/var/lib/etlctl")


def default_home() -> Path:
    """ETLCTL_HOME, else the user's data directory (where the embedded server keeps its data).

    As root, /var/lib/etlctl instead: the server then runs as another user, who cannot enter
    /root (0700), so root's own data directory could never hold it. A server an earlier etlctl
    already made in root's data directory stays where it is."""
    explicit = os.environ.get("ETLCTL_HOME")
    if explicit:
        return Path(explicit).expanduser()
    import platformdirs  # only when the default is needed: it costs an import

    home = Path(platformdirs.user_data_dir("etlctl", appauthor=False))
    if hasattr(os, "geteuid") and os.geteuid() == 0 and not (home / "pgdata").is_dir():
        return ROOT_HOME
    return home


EMBEDDED = "embedded"  # --dsn embedded / ETLCTL_DSN=embedded: the embedded server, created if missing
LIBPQ_VARIABLES = ("PGHOST", "PGDATABASE", "PGSERVICE")  # any of these names a database through libpq alone


def configured_dsn(dsn: str | None, environ=os.environ) -> str | None:
    """The --dsn/ETLCTL_DSN value, or None when neither is set; an empty one is a usage error
    (click reads an empty ETLCTL_DSN as unset, hence the look at the environment)."""
    if dsn is None and environ.get("ETLCTL_DSN") == "":
        dsn = ""
    if dsn is not None and not dsn.strip():
        raise UsageError(message="empty --dsn/ETLCTL_DSN: give a connection string, or `embedded` for the embedded server")
    return dsn


def libpq_environment(environ=os.environ) -> bool:
    """Whether libpq's own variables name a database (a service counts: its file says where)."""
    return any(environ.get(name) for name in LIBPQ_VARIABLES)


def validate_connect_timeout(seconds: float) -> int:
    """--connect-timeout in whole seconds (rounded), as libpq takes it; below its minimum is refused
    rather than silently raised to it."""
    if seconds < MIN_CONNECT_TIMEOUT:
        raise UsageError(message=f"invalid --connect-timeout {seconds:g}s: libpq waits at least "
                                 f"{MIN_CONNECT_TIMEOUT}s to connect (it reads less as {MIN_CONNECT_TIMEOUT}s)")
    return int(round(seconds))


def validate_timezone(name: str) -> str:
    """An IANA zone name such as 'UTC' or 'America/New_York'."""
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise UsageError(message=f"invalid --db-timezone {name!r}: expected an IANA zone such as UTC or America/New_York") from None
    return name
