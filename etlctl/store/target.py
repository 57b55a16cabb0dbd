"""Where the database is: ``--dsn``, else ``ETLCTL_DSN`` (both arrive as
``settings.dsn``; the value ``embedded`` means the embedded server, created if
missing), else libpq's ``PG*`` variables when ``PGHOST``, ``PGDATABASE`` or
``PGSERVICE`` is set, else the embedded server if it exists (announced once on
stderr). Only ``db init`` (``create_embedded``) and ``--dsn embedded`` create
it: any other command with nothing configured exits 6 rather than start a new,
empty database.

A DSN may name several hosts (``host=a,b port=5432,5433
target_session_attrs=read-write``, or ``PGHOST=a,b``): libpq (psycopg, one
attempt per host) takes the first that answers and, with
``target_session_attrs=read-write``, accepts writes. etlctl passes them on
untouched and shows them as ``user@a:5432,b:5433/db``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from etlctl.errors import NoDatabaseConfigured, UsageError
from etlctl.store import settings as config
from etlctl.store.settings import ConnectionSettings

_announced_embedded = False


@dataclass(frozen=True)
class Target:
    conninfo: str  # may hold a password: never print it, print `shown`
    shown: str
    password: str | None = None
    embedded_home: Path | None = None


def resolve_target(settings: ConnectionSettings, create_embedded: bool = False) -> Target:
    """Where to connect; ``create_embedded`` lets a missing embedded server be created (``db init``)."""
    dsn = config.configured_dsn(settings.dsn)
    if dsn is not None and dsn.strip() == config.EMBEDDED:
        return _embedded(settings.home, create=True)
    if dsn is not None:
        return _from_dsn(dsn)
    if config.libpq_environment():
        if os.environ.get("PGSERVICE") and not (os.environ.get("PGHOST") or os.environ.get("PGDATABASE")):
            shown = f"service {os.environ['PGSERVICE']}"
        else:
            shown = where_shown(os.environ.get("PGUSER"), hosts_shown(os.environ.get("PGHOST") or "localhost",
                                                                     os.environ.get("PGPORT")),
                                os.environ.get("PGDATABASE"))
        password = os.environ.get("PGPASSWORD") or None
        return Target("", scrub(f"PG* variables: {shown}", password), password=password)
    return _embedded(settings.home, create=create_embedded)


def where_shown(user: str | None, hosts: str, dbname: str | None) -> str:
    """``user@hosts/dbname``; without a user, no bare ``@`` in front (``/tmp:5432/etl``)."""
    return f"{user + '@' if user else ''}{hosts}/{dbname or ''}"


def hosts_shown(hosts: str, ports: str | None) -> str:
    """``a:5432,b:5433`` for libpq's comma-separated hosts and ports (one port may serve every host)."""
    names = hosts.split(",")
    numbers = (ports or "5432").split(",")
    if len(numbers) == 1:
        numbers = numbers * len(names)
    if len(numbers) != len(names):  # libpq refuses such a DSN when it connects; show it as given
        return f"{hosts}:{ports}"
    return ",".join(f"{name or 'localhost'}:{number or '5432'}" for name, number in zip(names, numbers))


def embedded_home(settings: ConnectionSettings, command: str) -> Path:
    """ETLCTL_HOME, for a command that acts only on the embedded server (``db stop``); a usage
    error when another database is configured, so it never acts on the wrong one silently."""
    dsn = config.configured_dsn(settings.dsn)
    if dsn is not None and dsn.strip() != config.EMBEDDED:
        configured = "--dsn/ETLCTL_DSN names another database"
    elif dsn is None and config.libpq_environment():
        configured = f"{'/'.join(config.LIBPQ_VARIABLES)} name another database"
    else:
        return settings.home
    raise UsageError(message=f"`etlctl {command}` acts only on the embedded server in ETLCTL_HOME, but {configured}: "
                             "stop that server with its own tools, or leave --dsn out (--dsn embedded is accepted)")


def parse_dsn(dsn: str) -> dict:
    """A DSN's parameters; a usage error when libpq cannot read it."""
    from psycopg import conninfo as ci

    try:
        return ci.conninfo_to_dict(dsn)
    except Exception:
        # libpq's parse errors may quote the DSN, password included: say nothing of its text.
        raise UsageError(message="invalid --dsn/ETLCTL_DSN: expected a libpq connection string or a postgresql:// URI") from None


def _from_dsn(dsn: str) -> Target:
    params = parse_dsn(dsn)
    host = params.get("host") or params.get("hostaddr") or "localhost"
    shown = where_shown(params.get("user"), hosts_shown(host, params.get("port")), params.get("dbname"))
    password = params.get("password") or None
    return Target(dsn, scrub(shown, password), password=password)  # a database may be named like the password


def _embedded(home: Path, create: bool) -> Target:
    from etlctl.store import embedded

    global _announced_embedded
    if not embedded.exists(home):
        if not create:
            raise NoDatabaseConfigured()
        embedded.binaries()  # without the embedded extra: say so before announcing a server
    if not _announced_embedded:
        _announced_embedded = True
        verb = "using" if embedded.exists(home) else "creating"
        print(
            f"etlctl: {verb} the embedded PostgreSQL server in {embedded.pgdata(home)} "
            "(set ETLCTL_DSN or --dsn for another server)",
            file=sys.stderr,
        )
    found = embedded.ensure_running(home, create=create)
    return Target(found.conninfo(), f"embedded server in {embedded.pgdata(home)}", embedded_home=home)


def scrub(text: str, password: str | None) -> str:
    return text.replace(password, "***") if password else text
