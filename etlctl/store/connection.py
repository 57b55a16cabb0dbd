"""Connections: how each session is set up, and the one place where psycopg
errors become etlctl errors. Where the database is: :mod:`etlctl.store.target`.

Every session carries ``application_name=etlctl`` and its statement, lock and
idle-in-transaction timeouts in the startup packet (no extra round trip), and
its ``TimeZone`` is the zone of the naive ``timestamp`` columns, so SQL
compares and writes them in that zone.

What bounds a wait for the server (so that no command hangs past its timeouts):

- connecting: ``--connect-timeout``, per host of a multi-host DSN (psycopg
  tries each in turn);
- a statement: the server's statement and lock timeouts, and etlctl's own
  deadline (:mod:`etlctl.store.deadline`) of ``--statement-timeout`` plus
  ``--connect-timeout``, for a server that is frozen or a commit that waits
  for a synchronous standby that is gone: then exit 6;
- a peer that vanished over TCP (a host that lost power, a network cut):
  keepalives and ``tcp_user_timeout`` (settings.TCP_PARAMETERS) make the kernel
  give the connection up, unless the DSN sets them itself. Over a Unix socket a
  server that dies closes it at once.

A long-running command that lost its connection opens a new one with
:meth:`Session.reopen`: with several hosts and ``target_session_attrs=read-write``
that is whichever host is now the primary.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator

from etlctl.store import clock
from etlctl.store import loaders
from etlctl.store import queries
from etlctl.store import settings as config
from etlctl.store.deadline import Deadline
from etlctl.store.settings import ConnectionSettings
from etlctl.store.target import Target, resolve_target, scrub
from etlctl.store.target import embedded_home  # noqa: F401 (where the CLI finds it)
from etlctl.errors import (
    Busy,
    Conflict,
    DatabaseError,
    DatabaseUnavailable,
    EtlctlError,
    NotInitialized,
    ReadOnlyDatabase,
    UsageError,
)

APPLICATION_NAME = "etlctl"
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

    def __init__(self, conn, target: Target, command: str, settings: ConnectionSettings | None = None) -> None:
        self.conn = conn
        self.target = target
        self.command = command
        self.settings = settings or ConnectionSettings()
        self.dry_run = False
        self._actor = {"actor_host": socket.gethostname(), "actor_pid": os.getpid(), "actor_command": command}
        self.deadline = Deadline(self.settings.statement_timeout + self.settings.connect_timeout, self._fileno)

    @property
    def where(self) -> str:
        """The server this session reached, ``host:port`` (one of a multi-host DSN's)."""
        try:
            return f"{self.conn.info.host}:{self.conn.info.port}"
        except Exception:
            return self.target.shown

    def reopen(self) -> None:
        """A new connection in place of this one (lost, or given up): to the same target, so that with
        several hosts and target_session_attrs=read-write it reaches whichever is the primary now."""
        self.close()
        self.conn = _open(self.target, self.settings)
        self.deadline = Deadline(self.deadline.seconds, self._fileno)

    def _fileno(self) -> int | None:
        try:
            return self.conn.pgconn.socket
        except Exception:
            return None  # closed or broken: the statement fails on its own, nothing to arm

    @contextlib.contextmanager
    def _waiting(self) -> Iterator[None]:
        """Waiting for the server's answer: a Ctrl-C cancels the statement, and the deadline is armed."""
        global _statements
        _statements += 1
        try:
            with self.deadline.waiting():
                yield
        finally:
            _statements -= 1

    @contextlib.contextmanager
    def _paused(self) -> Iterator[None]:
        """Inside a _waiting block, the caller's own work (a transaction's body, rows being handled)."""
        global _statements
        _statements -= 1
        try:
            with self.deadline.paused():
                yield
        finally:
            _statements += 1

    def _params(self, params: dict) -> dict:
        return {"now": clock.sql_now(), **self._actor, **params}

    def one(self, query: str, /, **params) -> dict | None:
        with self.translating(), self._waiting():
            return self.conn.execute(queries.get(query), self._params(params)).fetchone()

    def all(self, query: str, /, **params) -> list[dict]:
        with self.translating(), self._waiting():
            return self.conn.execute(queries.get(query), self._params(params)).fetchall()

    def run(self, query: str, /, **params) -> int:
        with self.translating(), self._waiting():
            return self.conn.execute(queries.get(query), self._params(params)).rowcount

    def stream(self, query: str, /, batch: int = 2000, **params) -> Iterator[dict]:
        """Rows of a named query through a server-side cursor, ``batch`` at a time:
        memory stays flat however many rows there are. Runs in its own transaction."""
        with self.translating(), self._waiting(), self.conn.transaction():
            with self.conn.cursor(name=f"etlctl_{query}") as cursor:
                cursor.execute(queries.get(query), self._params(params))
                while True:
                    rows = cursor.fetchmany(batch)
                    if not rows:
                        break
                    with self._paused():  # the caller's work on the rows is its own
                        yield from rows

    def notifications(self, timeout: float) -> Iterator:
        """NOTIFY messages on the channels this session LISTENs to, as they arrive,
        for at most ``timeout`` seconds. A lost connection raises DatabaseUnavailable."""
        with self.translating():
            yield from self.conn.notifies(timeout=timeout)

    def script(self, sql: str) -> None:
        """Run a whole file of SQL (schema and migrations), with no parameters. Each statement of it is
        bounded by statement_timeout, the whole by nothing: `db init` is run by a person."""
        with self.translating(), _waiting_for_server():
            self.conn.execute(sql, prepare=False)

    @contextlib.contextmanager
    def transaction(self, rollback: bool = False) -> Iterator[None]:
        """One transaction; ``rollback=True`` undoes it at the end (--dry-run)."""
        import psycopg

        # BEGIN and COMMIT are waited for under the deadline; the body's statements arm their own.
        with self.translating(), self._waiting(), self.conn.transaction() as tx, self._paused():
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
            translated = translate(exc, self.target, self.command, self.where)
            if translated is None:
                raise
            if self.deadline.expired and isinstance(translated, DatabaseUnavailable):
                translated = DatabaseUnavailable(translated.detail, target=self.where, reason=(
                    f"no answer for {self.deadline.seconds:g}s (--statement-timeout plus --connect-timeout): the "
                    "server is frozen, or a commit waits for a synchronous standby that is gone; etlctl closed the "
                    "connection"))
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
    return Session(_open(target, settings), target, command, settings)


def _open(target: Target, settings: ConnectionSettings):
    # Autocommit: a single statement is its own transaction; Session.transaction() opens longer ones.
    import psycopg
    from psycopg.rows import dict_row

    from psycopg import conninfo as ci

    given = ci.conninfo_to_dict(target.conninfo) if target.conninfo else {}
    kwargs = {
        **{name: value for name, value in config.TCP_PARAMETERS.items() if name not in given},
        "application_name": APPLICATION_NAME,
        "connect_timeout": settings.connect_timeout,
        "options": f"{given.get('options', '')} {session_options(settings)}".strip(),
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
    session = Session(_open(admin, settings), admin, "db", settings)
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
    # On a hot standby the same code cancels a read that WAL replay had to overtake ("conflict with recovery").
    "40001": "serialization failure, or a read on a standby cancelled by a conflict with recovery",
    "40P01": "deadlock detected",
    "25P03": "idle-in-transaction timeout",
}
_CONFLICT = {"23505", "23514", "23503", "42P04"}


READ_ONLY = "25006"  # read_only_sql_transaction: a hot standby (or default_transaction_read_only) refused a write


def translate(exc: BaseException, target: Target, command: str = "", where: str | None = None) -> EtlctlError | None:
    """The etlctl error for a psycopg error; None for anything else. ``where``: the host the session
    reached, when there was a session (one of a multi-host DSN's)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return None
    if not isinstance(exc, psycopg.Error):
        return None
    code = getattr(exc, "sqlstate", None) or ""
    reason = _first_line(str(exc), target.password)
    detail = scrub(str(exc), target.password)
    if code in _NOT_INITIALIZED:
        return NotInitialized(detail, target=target.shown)
    if code == "55P03":
        return Busy(detail, reason=_lock_wait(exc))
    if code in _BUSY:
        return Busy(detail, reason=_BUSY[code])
    if code == READ_ONLY:
        # Writes only: a read-only command (status, why, doctor...) works on a standby and never gets here.
        return ReadOnlyDatabase(detail, where=where or target.shown)
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
        return DatabaseUnavailable(detail, target=target.shown, reason=_every_host(str(exc), target.password) or reason)
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


# psycopg tries each host of a multi-host DSN in turn and lists every failure, one line each.
_ATTEMPT = re.compile(r"^- host: '([^']*)', port: '([^']*)', hostaddr: (?:None|'[^']*'): (.*)$")


def _every_host(text: str, password: str | None) -> str | None:
    """For a DSN of several hosts that all failed: each host and why (the first line names only the last)."""
    failures = []
    for line in text.splitlines():
        match = _ATTEMPT.match(line.strip())
        if match:
            host, port, why = match.groups()
            failures.append(f"{host}:{port or '5432'} ({why.rsplit(' failed: ', 1)[-1].strip()})")
    return scrub("no host accepted the connection: " + "; ".join(failures), password) if len(failures) > 1 else None


def _first_line(text: str, password: str | None) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "unknown error")
    return scrub(line, password)
