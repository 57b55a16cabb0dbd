"""A PostgreSQL wire-protocol proxy that counts what reaches the server.

It listens on a Unix socket (``<dir>/.s.PGSQL.<port>``, as libpq expects),
forwards every byte to the real server's Unix socket and back, and parses the
client's side of the stream: the untyped startup packet (and an SSL or GSS
request before it), then typed messages. What it records, per connection:

- every simple query (``Q``): its SQL, split into transaction control
  (``BEGIN``, ``COMMIT``, ``ROLLBACK``, ``SAVEPOINT``, ``RELEASE``) and statements;
- every ``Execute`` (``E``) of the extended protocol, with the SQL of the
  statement behind its portal (from the ``Parse`` and ``Bind`` messages).

So a count is the number of statements the server was asked to run, whatever
the driver does on its side. Used by tests/test_round_trips.py and by bench/.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import tempfile
import threading
from dataclasses import dataclass, field

_UNTYPED_REQUESTS = {80877103, 80877104}  # SSLRequest, GSSENCRequest: a startup packet follows
_CANCEL_REQUEST = 80877102
_CONTROL = ("BEGIN", "START TRANSACTION", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE", "ABORT")


@dataclass
class Message:
    kind: str  # "control" (BEGIN, COMMIT, ...), "statement" (a query the server runs)
    sql: str
    protocol: str  # "simple" (Q) or "extended" (E)


@dataclass
class Connection:
    number: int
    startup: dict = field(default_factory=dict)  # user, database, application_name, options
    messages: list[Message] = field(default_factory=list)

    @property
    def statements(self) -> list[str]:
        return [m.sql for m in self.messages if m.kind == "statement"]

    @property
    def control(self) -> list[str]:
        return [m.sql for m in self.messages if m.kind == "control"]

    def transactions(self) -> list[list[str]]:
        """The statements grouped by transaction: BEGIN..COMMIT/ROLLBACK is one; outside
        a block (autocommit) each statement is its own. Savepoints stay inside theirs."""
        out: list[list[str]] = []
        current: list[str] | None = None
        for m in self.messages:
            word = m.sql.split(None, 1)[0].upper() if m.sql.strip() else ""
            if m.kind == "control" and word in ("BEGIN", "START"):
                current = []
            elif m.kind == "control" and word in ("COMMIT", "END", "ROLLBACK", "ABORT") and not m.sql.upper().startswith("ROLLBACK TO"):
                if current is not None:
                    out.append(current)
                current = None
            elif m.kind == "statement":
                if current is None:
                    out.append([m.sql])
                else:
                    current.append(m.sql)
        if current is not None:
            out.append(current)  # an open transaction at the end (a killed client)
        return out


_PARAM = re.compile(r"%\(\w+\)s")
_NUMBERED = re.compile(r"\$\d+")


def query_name(sql: str) -> str:
    """The name in sql/queries of a statement seen on the wire (psycopg numbers the parameters); else the SQL."""
    from etlctl.store import queries

    seen = _NUMBERED.sub("", sql)
    for name in queries.names():
        if _PARAM.sub("", queries.get(name)) == seen:
            return name
    return sql


class PgProxy:
    """``with PgProxy(socket_dir, port) as proxy:`` then connect to ``proxy.dsn(dbname)``."""

    def __init__(self, upstream_dir: str, upstream_port: int, user: str = "postgres") -> None:
        self.upstream = os.path.join(upstream_dir, f".s.PGSQL.{upstream_port}")
        self.user = user
        self.port = upstream_port
        self.dir = tempfile.mkdtemp(prefix="pgproxy-")
        self.path = os.path.join(self.dir, f".s.PGSQL.{self.port}")
        self.connections: list[Connection] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._closed = False

    def dsn(self, dbname: str) -> str:
        return f"host={self.dir} port={self.port} user={self.user} dbname={dbname}"

    # --- what was seen --------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.connections = []

    def client_connections(self) -> list[Connection]:
        """Connections that sent a startup packet (not cancel requests)."""
        with self._lock:
            return [c for c in self.connections if c.startup]

    def statements(self) -> list[str]:
        return [s for c in self.client_connections() for s in c.statements]

    # --- running --------------------------------------------------------------

    def start(self) -> PgProxy:
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(64)
        thread = threading.Thread(target=self._accept, name="pgproxy-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._closed = True
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)

    def __enter__(self) -> PgProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                server.connect(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                conn = Connection(len(self.connections) + 1)
                self.connections.append(conn)
                self._sockets += [client, server]
            for target, args in ((self._client_to_server, (client, server, conn)), (self._pipe, (server, client))):
                thread = threading.Thread(target=target, args=args, daemon=True)
                thread.start()

    def _pipe(self, src: socket.socket, dst: socket.socket, observe=None) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if observe is not None:
                    observe(data)  # parse first: a count is complete once the server has the message
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def _client_to_server(self, client: socket.socket, server: socket.socket, conn: Connection) -> None:
        self._pipe(client, server, _Parser(conn, self._lock).feed)


class _Parser:
    def __init__(self, conn: Connection, lock: threading.Lock) -> None:
        self.conn = conn
        self.lock = lock
        self.buffer = b""
        self.started = False
        self.statements: dict[str, str] = {}  # prepared statement name -> SQL ("" = unnamed)
        self.portals: dict[str, str] = {}  # portal name -> SQL

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if not self.started:
                if len(self.buffer) < 8:
                    return
                length, code = struct.unpack("!ii", self.buffer[:8])
                if len(self.buffer) < length:
                    return
                body, self.buffer = self.buffer[8:length], self.buffer[length:]
                if code in _UNTYPED_REQUESTS:
                    continue  # the server answers one byte; the real startup packet follows
                if code == _CANCEL_REQUEST:
                    self.started = True
                    continue
                parts = body.split(b"\0")
                with self.lock:
                    self.conn.startup = {k.decode(): v.decode() for k, v in zip(parts[0::2], parts[1::2]) if k}
                self.started = True
                continue
            if len(self.buffer) < 5:
                return
            kind = chr(self.buffer[0])
            (length,) = struct.unpack("!i", self.buffer[1:5])
            if len(self.buffer) < 1 + length:
                return
            body, self.buffer = self.buffer[5:1 + length], self.buffer[1 + length:]
            self._message(kind, body)

    def _message(self, kind: str, body: bytes) -> None:
        if kind == "Q":
            sql = body.rstrip(b"\0").decode("utf-8", "replace")
            self._record(sql, "simple")
        elif kind == "P":
            name, rest = body.split(b"\0", 1)
            sql = rest.split(b"\0", 1)[0].decode("utf-8", "replace")
            self.statements[name.decode()] = sql
        elif kind == "B":
            portal, rest = body.split(b"\0", 1)
            statement = rest.split(b"\0", 1)[0].decode()
            self.portals[portal.decode()] = self.statements.get(statement, f"<prepared {statement}>")
        elif kind == "E":
            portal = body.split(b"\0", 1)[0].decode()
            self._record(self.portals.get(portal, f"<portal {portal}>"), "extended")
        elif kind == "C":  # Close: a statement or a portal is gone
            which, name = chr(body[0]), body[1:].rstrip(b"\0").decode()
            (self.statements if which == "S" else self.portals).pop(name, None)

    def _record(self, sql: str, protocol: str) -> None:
        head = sql.lstrip().upper()
        control = head.startswith(_CONTROL) and not head.startswith(("BEGIN;", "END;"))
        with self.lock:
            self.conn.messages.append(Message("control" if control else "statement", sql.strip(), protocol))
