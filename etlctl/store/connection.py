"""Connections: where the database is, how each session is set up, and the
one place where psycopg errors become etlctl errors.

Where: ``--dsn``, else ``ETLCTL_DSN`` (both arrive as ``settings.dsn``; the
value ``embedded`` means the embedded server, created if missing), else libpq's
``PG*`` variables when ``PGHOST``, ``PGDATABASE`` or ``PGSERVICE`` is set, else
the embedded server if it exists (announced once on stderr). Only ``db init``
(``create_embedded``) and ``--dsn embedded`` create it: any other command with
nothing configured exits 6 rather than start a new, empty database.

Every session carries ``application_name=etlctl`` and its statement, lock and
idle-in-transaction timeouts in the startup packet (no extra round trip), and
its ``TimeZone`` is the zone of the naive ``timestamp`` columns, so SQL
compares and writes them in that zone.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from etlctl.store import clock
from etlctl.store import loaders
from etlctl.store import queries
from etlctl.store import settings as config
from etlctl.store.settings import ConnectionSettings
from etlctl.errors import (
    Busy,
    Conflict,
    DatabaseError,
    DatabaseUnavailable,
    EtlctlError,
    NoDatabaseConfigured,
    NotInitialized,
    UsageError,
)

APPLICATION_NAME = "etlctl"
_announced_embedded = False
# Statements this process is waiting for: a Ctrl-C then cancels the statement (KeyboardInterrupt, which psycopg
# turns into a cancel request) rather than leaving at once (see etlctl.cli.run).
_statements = 0


def statement_running() -> bool:
    return _statements > 0


@contextlib.contextmanager
def _waiting_for_server() -> Iterator[None]:
    global _statements
    _statements += 1
    try:
        yield
    finally:
        _statements -= 1


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
            shown = "{}@{}:{}/{}".format(
                os.environ.get("PGUSER", ""), os.environ.get("PGHOST", "localhost"),
                os.environ.get("PGPORT", "5432"), os.environ.get("PGDATABASE", ""),
            )
        password = os.environ.get("PGPASSWORD") or None
        return Target("", _scrub(f"PG* variables: {shown}", password), password=password)
    return _embedded(settings.home, create=create_embedded)


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
    shown = f"{params.get('user', '')}@{host}:{params.get('port', '5432')}/{params.get('dbname', '')}"
    password = params.get("password") or None
    return Target(dsn, _scrub(shown, password), password=password)  # a database may be named like the password


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


def session_options(settings: ConnectionSettings) -> str:
    def ms(seconds: float) -> int:
        return int(round(seconds * 1000))

    return " ".join([
        f"-c statement_timeout={ms(settings.statement_timeout)}",
        f"-c lock_timeout={ms(settings.lock_timeout)}",
        f"-c idle_in_transaction_session_timeout={ms(settings.idle_timeout)}",
        f"-c TimeZone={settings.db_timezone}",
    ])


class Session:
    """A connection that runs named queries and speaks only etlctl errors.

    Parameters every query may use without being passed: ``now`` (the clock
    seam), ``actor_host``, ``actor_pid`` and ``actor_command`` (for audit rows).

    ``dry_run`` is True when everything the session does runs inside one
    transaction that :func:`connect` rolls back at the end (``--dry-run``). The
    library does the real work regardless; it reads the flag only where doing
    it would mean waiting (``wait-and-reset`` returns after its next step).
    """

    def __init__(self, conn, target: Target, command: str) -> None:
        self.conn = conn
        self.target = target
        self.command = command
        self.dry_run = False
        self._actor = {"actor_host": socket.gethostname(), "actor_pid": os.getpid(), "actor_command": command}

    def _params(self, params: dict) -> dict:
        return {"now": clock.sql_now(), **self._actor, **params}

    def one(self, query: str, /, **params) -> dict | None:
        with self.translating(), _waiting_for_server():
            return self.conn.execute(queries.get(query), self._params(params)).fetchone()

    def all(self, query: str, /, **params) -> list[dict]:
        with self.translating(), _waiting_for_server():
            return self.conn.execute(queries.get(query), self._params(params)).fetchall()

    def run(self, query: str, /, **params) -> int:
        with self.translating(), _waiting_for_server():
            return self.conn.execute(queries.get(query), self._params(params)).rowcount

    def stream(self, query: str, /, batch: int = 2000, **params) -> Iterator[dict]:
        """Rows of a named query through a server-side cursor, ``batch`` at a time:
        memory stays flat however many rows there are. Runs in its own transaction."""
        with self.translating(), self.conn.transaction():
            with self.conn.cursor(name=f"etlctl_{query}") as cursor:
                with _waiting_for_server():
                    cursor.execute(queries.get(query), self._params(params))
                while True:
                    with _waiting_for_server():  # only while fetching: the caller's work on the rows is its own
                        rows = cursor.fetchmany(batch)
                    if not rows:
                        break
                    yield from rows

    def notifications(self, timeout: float) -> Iterator:
        """NOTIFY messages on the channels this session LISTENs to, as they arrive,
        for at most ``timeout`` seconds. A lost connection raises DatabaseUnavailable."""
        with self.translating():
            yield from self.conn.notifies(timeout=timeout)

    def script(self, sql: str) -> None:
        """Run a whole file of SQL (schema and migrations), with no parameters."""
        with self.translating(), _waiting_for_server():
            self.conn.execute(sql, prepare=False)

    @contextlib.contextmanager
    def transaction(self, rollback: bool = False) -> Iterator[None]:
        """One transaction; ``rollback=True`` undoes it at the end (--dry-run)."""
        import psycopg

        with self.translating(), self.conn.transaction() as tx:
            yield
            if rollback:
                raise psycopg.Rollback(tx)

    @contextlib.contextmanager
    def tick_lock(self, name: str) -> Iterator[bool]:
        """Try the per-database lock of a cron tick (sweep, schedule-next); yields whether it was taken.

        Correctness never depends on it (every write is guarded); it only spares a
        second tick on the same database from repeating the first one's work.
        """
        taken = self.one("try_tick_lock", name=name)["locked"]
        try:
            yield taken
        finally:
            if taken:
                with contextlib.suppress(EtlctlError):
                    self.one("release_tick_lock", name=name)

    @contextlib.contextmanager
    def translating(self) -> Iterator[None]:
        try:
            yield
        except EtlctlError:
            raise
        except Exception as exc:
            translated = translate(exc, self.target, self.command)
            if translated is None:
                raise
            raise translated from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


@contextlib.contextmanager
def connect(settings: ConnectionSettings, command: str = "", dry_run: bool = False,
            create_embedded: bool = False) -> Iterator[Session]:
    """A session for one command; with ``dry_run``, all of it inside one transaction rolled back at the end.

    This is etlctl's one --dry-run: every command that writes opens its session
    here, and its writes (savepoints inside that transaction) are undone together.
    """
    session = open_session(settings, command, create_embedded)
    try:
        if dry_run:
            session.dry_run = True
            with session.transaction(rollback=True):
                yield session
        else:
            yield session
    finally:
        session.close()


def open_session(settings: ConnectionSettings, command: str = "", create_embedded: bool = False) -> Session:
    """A session that the caller closes (``watch`` holds and replaces its own)."""
    target = resolve_target(settings, create_embedded)
    return Session(_open(target, settings), target, command)


def _open(target: Target, settings: ConnectionSettings):
    # Autocommit: a single statement is its own transaction; Session.transaction() opens longer ones.
    import psycopg
    from psycopg.rows import dict_row

    from psycopg import conninfo as ci

    user_options = ci.conninfo_to_dict(target.conninfo).get("options", "") if target.conninfo else ""
    kwargs = {
        "application_name": APPLICATION_NAME,
        "connect_timeout": settings.connect_timeout,
        "options": f"{user_options} {session_options(settings)}".strip(),
    }
    try:
        return loaders.install(psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row, **kwargs))
    except psycopg.Error as exc:
        if target.embedded_home is not None:
            # A stale postmaster.pid or a server that was never given etlctl's database: start, create, retry once.
            from etlctl.store import embedded

            try:
                found = embedded.ensure_running(target.embedded_home)
                _create_embedded_database(found, settings)
                return loaders.install(psycopg.connect(found.conninfo(), autocommit=True, row_factory=dict_row, **kwargs))
            except psycopg.Error as again:
                exc = again
        raise translate(exc, target) from exc


def _create_embedded_database(found, settings: ConnectionSettings) -> None:
    """etlctl's database on a freshly started embedded server (its postgres database always exists)."""
    admin = Target(found.conninfo("postgres"), f"embedded server in {found.socket_dir}")
    session = Session(_open(admin, settings), admin, "db")
    try:
        if not session.one("embedded_database_exists"):
            try:
                session.run("embedded_create_database")
            except Conflict:
                pass  # another etlctl process created it first (both cron lines start in the same second)
    finally:
        session.close()


# SQLSTATE -> how etlctl reports it. Classes (two characters) apply when no exact code does.
_UNAVAILABLE = {"08", "28", "3D000", "57P01", "57P02", "57P03", "53300"}
_NOT_INITIALIZED = {"42P01", "3F000", "42883"}
_BUSY = {
    "55P03": "lock timeout: another session held a lock this command waits for (a table lock, or an advisory "
             "lock such as another `etlctl db init`'s) longer than --lock-timeout",
    "57014": "statement timeout or cancel",
    "40001": "serialization failure",
    "40P01": "deadlock detected",
    "25P03": "idle-in-transaction timeout",
}
_CONFLICT = {"23505", "23514", "23503", "42P04"}


def translate(exc: BaseException, target: Target, command: str = "") -> EtlctlError | None:
    """The etlctl error for a psycopg error; None for anything else."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return None
    if not isinstance(exc, psycopg.Error):
        return None
    code = getattr(exc, "sqlstate", None) or ""
    reason = _first_line(str(exc), target.password)
    detail = _scrub(str(exc), target.password)
    if code in _NOT_INITIALIZED:
        return NotInitialized(detail, target=target.shown)
    if code == "55P03":
        return Busy(detail, reason=_lock_wait(exc))
    if code in _BUSY:
        return Busy(detail, reason=_BUSY[code])
    zone = _TIMEZONE_REFUSED.search(str(exc))
    if zone:
        # A zone Python's tz database has and the server's has not: bad input, not an unreachable server.
        return UsageError(detail, message=f"invalid --db-timezone {zone.group(1)!r}: the database server does not know "
                                          "that zone (its names: SELECT name FROM pg_timezone_names)")
    if code in _CONFLICT:
        return Conflict(detail, message=f"refused by a database constraint: {reason}")
    if code == "42501":
        if command.startswith("db "):
            return DatabaseError(detail, reason=f"{reason} (`etlctl db init` runs as the owner of the tables)")
        return DatabaseError(detail, reason=f"{reason} (the role needs the grants in sql/roles.sql)")
    # No SQLSTATE on an operational error: the connection itself failed or was lost.
    if code in _UNAVAILABLE or code[:2] in _UNAVAILABLE or (not code and isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))):
        return DatabaseUnavailable(detail, target=target.shown, reason=reason)
    return DatabaseError(detail, reason=reason)


# The server's refusal of the TimeZone in the startup packet (no SQLSTATE reaches a failed connection).
_TIMEZONE_REFUSED = re.compile(r'parameter "TimeZone": "([^"]*)"')
# A row lock wait names the row in the error's context (a table or advisory lock wait has none).
_ROW_LOCK = re.compile(r'tuple \(\d+,\d+\) in relation "([^"]+)"')


def _lock_wait(exc) -> str:
    """What the lock timeout was waiting for: a row (the context names its table), else a table or advisory lock."""
    context = getattr(getattr(exc, "diag", None), "context", None) or ""
    row = _ROW_LOCK.search(context)
    if row:
        return f"lock timeout: another session held a row of {row.group(1)} locked longer than --lock-timeout"
    if context:  # a context in the server's own language (lc_messages): a row, most likely, but unsaid
        return "lock timeout: another session held a lock this command waits for longer than --lock-timeout"
    return _BUSY["55P03"]


def _scrub(text: str, password: str | None) -> str:
    return text.replace(password, "***") if password else text


def _first_line(text: str, password: str | None) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "unknown error")
    return _scrub(line, password)
