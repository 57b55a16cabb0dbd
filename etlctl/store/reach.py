"""The database a command used, as a conninfo a person may print: for the crontab block (`etlctl cron`)
and for the fixes doctor and why print, so that a command run as printed, in any shell, reaches the
same database the diagnosis came from. Never a password: that belongs in ~/.pgpass."""

from __future__ import annotations

import os

SECRET_PARAMS = ("password", "sslpassword")
# libpq's variables that say where and as whom, and the conninfo keyword each stands for (PGPASSWORD never).
# Every host of a multi-host PGHOST=a,b is kept, with what chooses among them.
PG_KEYWORDS = (("PGHOST", "host"), ("PGHOSTADDR", "hostaddr"), ("PGPORT", "port"), ("PGDATABASE", "dbname"),
               ("PGUSER", "user"), ("PGSERVICE", "service"), ("PGSSLMODE", "sslmode"), ("PGPASSFILE", "passfile"),
               ("PGTARGETSESSIONATTRS", "target_session_attrs"), ("PGLOADBALANCEHOSTS", "load_balance_hosts"),
               ("PGSSLROOTCERT", "sslrootcert"), ("PGSSLCERT", "sslcert"), ("PGSSLKEY", "sslkey"), ("PGSSLCRL", "sslcrl"))


def dsn_without_password(dsn: str) -> tuple[str, bool]:
    """The DSN without its secrets, and whether it had any (every host of a multi-host DSN is kept)."""
    from psycopg import conninfo

    from etlctl.store import settings as config
    from etlctl.store.target import parse_dsn

    if dsn.strip() == config.EMBEDDED:
        return dsn, False
    params = parse_dsn(dsn)
    removed = [params.pop(name, None) for name in SECRET_PARAMS]
    had = any(removed)
    # Where first, then who: host, port, dbname, user, then the rest as libpq lists them.
    ordered = {name: params.pop(name) for name in ("host", "hostaddr", "port", "dbname", "user") if name in params}
    return conninfo.make_conninfo(**ordered, **params), had


def printable_conninfo(target, environ=None, reached: tuple[str, int] | None = None) -> str:
    """The conninfo, without a password, of the database this session's ``target`` reached: the DSN
    it was given (--dsn, ETLCTL_DSN), libpq's PG* variables written out, or the embedded server's
    socket. Whoever runs a command printed with it reaches that database, whatever their own
    environment says. ``reached`` is the (host, port) the session connected to: a conninfo without
    a port (or a host) would take the reader's PGPORT (PGHOST) or libpq's default, another cluster
    maybe, so what was left out is filled in from it (not for several hosts: which one answers is
    theirs to choose)."""
    from psycopg import conninfo

    from etlctl.store.target import parse_dsn

    environ = os.environ if environ is None else environ
    if target.conninfo:
        given = dsn_without_password(target.conninfo)[0]
    else:
        given = conninfo.make_conninfo(**{keyword: environ[name] for name, keyword in PG_KEYWORDS if environ.get(name)})
    if reached is None or not given:
        return given
    params = parse_dsn(given)
    if "," in params.get("host", "") + params.get("hostaddr", "") + params.get("port", ""):
        return given
    host, port = reached
    pinned = {}
    if not (params.get("host") or params.get("hostaddr")) and host:
        pinned["host"] = host
    if not params.get("port") and port:
        pinned["port"] = str(port)
    if not pinned:
        return given
    return dsn_without_password(conninfo.make_conninfo(given, **pinned))[0]


def session_conninfo(session) -> str:
    """:func:`printable_conninfo` of the database ``session`` is connected to, its host and port pinned."""
    try:
        reached = (session.conn.info.host, session.conn.info.port)
    except Exception:  # a closed connection knows neither: print what was given
        reached = None
    return printable_conninfo(session.target, reached=reached)
