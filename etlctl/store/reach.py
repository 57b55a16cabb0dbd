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


def printable_conninfo(target, environ=None) -> str:
    """The conninfo, without a password, of the database this session's ``target`` reached: the DSN
    it was given (--dsn, ETLCTL_DSN), libpq's PG* variables written out, or the embedded server's
    socket. Whoever runs a command printed with it reaches that database, whatever their own
    environment says."""
    from psycopg import conninfo

    environ = os.environ if environ is None else environ
    if target.conninfo:
        return dsn_without_password(target.conninfo)[0]
    return conninfo.make_conninfo(**{keyword: environ[name] for name, keyword in PG_KEYWORDS if environ.get(name)})
