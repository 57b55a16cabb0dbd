"""A private RabbitMQ node for the tests, from Debian's ``rabbitmq-server`` package.

Nothing of it is shared with the machine: its own node name, AMQP, TLS and
distribution ports (free ones, chosen at run time), its own ``epmd`` on a
private port, and its data, logs, configuration, Erlang cookie (``HOME``) and
crash dumps under the test run's temporary directory. The binaries of
``/usr/lib/rabbitmq/bin`` run as the calling user (``/usr/sbin/rabbitmq-server``
would switch to the ``rabbitmq`` user and its home).

The node, its epmd and every process they start share one process group, so
stopping it can prove that nothing is left behind; a watchdog kills that group
if the test run itself dies without tearing down (SIGKILL, a CI timeout).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
INSTALL_COMMAND = "apt-get update && apt-get install -y rabbitmq-server"
VHOST = "pulse_etl"
USER = "etlctl_test"
BOOT_TIMEOUT = 60.0


class NodeExited(RuntimeError):
    """The node stopped while booting (its log says why: a port in use, most likely)."""


def installed() -> bool:
    return (RABBITMQ_BIN / "rabbitmq-server").is_file() and (RABBITMQ_BIN / "rabbitmqctl").is_file()


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on now, below Linux's ephemeral range (32768-60999).

    Not from bind(0): that hands out ephemeral ports, which any outgoing connection on the
    machine may take as its source port before the node binds them (seen: eaddrinuse at boot).
    """
    rng = random.SystemRandom()
    found: list[int] = []
    while len(found) < count:
        port = rng.randrange(20000, 32768)
        if port in found:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
    return found


def password_hash(password: str) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


@dataclass
class BrokerNode:
    """One private node. ``start()`` returns once a client can log in to the vhost."""

    root: Path
    password: str = field(default_factory=lambda: "pw-" + secrets.token_urlsafe(12))
    nodename: str = field(default_factory=lambda: f"etlctl-test-{os.getpid()}-{secrets.token_hex(3)}@localhost")
    controllable: bool = True  # stop_app, start_app and policies work (not so on an external broker)

    def __post_init__(self) -> None:
        self.amqp_port, self.tls_port, self.dist_port, self.epmd_port = free_ports(4)
        self.ca_file = self.root / "tls" / "ca.pem"
        self._server: subprocess.Popen | None = None
        self._epmd: subprocess.Popen | None = None
        self._watchdog: subprocess.Popen | None = None
        self._lifeline: int | None = None

    # --- addresses -----------------------------------------------------

    @property
    def url(self) -> str:
        return self.url_for(password=self.password)

    def url_for(self, password: str | None = None, vhost: str = VHOST, user: str = USER) -> str:
        secret = urllib.parse.quote(password if password is not None else self.password, safe="")
        return f"amqp://{user}:{secret}@127.0.0.1:{self.amqp_port}/{urllib.parse.quote(vhost, safe='')}"

    def tls_url(self, cafile: Path | None = None) -> str:
        """amqps:// to the TLS listener; its certificate names localhost and 127.0.0.1."""
        query = f"?cacertfile={urllib.parse.quote(str(cafile))}" if cafile else ""
        secret = urllib.parse.quote(self.password, safe="")
        return f"amqps://{USER}:{secret}@localhost:{self.tls_port}/{VHOST}{query}"

    # --- lifecycle -----------------------------------------------------

    def env(self) -> dict[str, str]:
        home = self.root / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(home),  # the Erlang cookie lives here
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            # rabbitmqctl's own distribution port: any free one, instead of the fixed 35672-35682 range.
            "RABBITMQ_CTL_DIST_PORT_MIN": "0",
            "RABBITMQ_CTL_DIST_PORT_MAX": "0",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-start_epmd false",
            "RABBITMQ_CTL_ERL_ARGS": "-start_epmd false",
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.root / "plugins-expand"),
            "ERL_CRASH_DUMP": str(self.root / "erl_crash.dump"),
        })
        return env

    def start(self, attempts: int = 3) -> None:
        for folder in ("home", "log", "tls"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        (self.root / "rabbitmq-env.conf").write_text("")  # else /etc/rabbitmq/rabbitmq-env.conf is read
        (self.root / "enabled_plugins").write_text("[].\n")
        make_certificates(self.root / "tls")
        (self.root / "definitions.json").write_text(json.dumps(self._definitions()))
        for attempt in range(1, attempts + 1):
            try:
                self._boot()
                return
            except NodeExited:
                # A port taken between our check and the node's bind: boot again on other ports.
                if attempt == attempts:
                    raise
                self.amqp_port, self.tls_port, self.dist_port, self.epmd_port = free_ports(4)
                shutil.rmtree(self.root / "mnesia", ignore_errors=True)

    def _boot(self) -> None:
        (self.root / "mnesia").mkdir(exist_ok=True)
        (self.root / "rabbitmq.conf").write_text(self._config())
        env = self.env()
        log = open(self.root / "log" / "node.out", "ab")
        try:
            # epmd in the foreground leads a new process group (in this session, so that the node can
            # join it); Ctrl-C in a terminal reaches only the foreground group, so teardown stops the node.
            self._epmd = subprocess.Popen(["epmd", "-port", str(self.epmd_port)], env=env, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT, process_group=0)
            self._watch_group()
            self._server = subprocess.Popen([str(RABBITMQ_BIN / "rabbitmq-server")], env=env, cwd=self.root,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            process_group=self._epmd.pid)
            self._await_login()
        except BaseException:
            self.stop(check=False)
            raise
        finally:
            log.close()

    def _definitions(self) -> dict:
        # Loaded at boot: one ctl call fewer per object, and the node is ready as soon as a login works.
        return {
            "vhosts": [{"name": VHOST}],
            "users": [{"name": USER, "password_hash": password_hash(self.password),
                       "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"]}],
            "permissions": [{"user": USER, "vhost": VHOST, "configure": ".*", "write": ".*", "read": ".*"}],
        }

    def _config(self) -> str:
        tls = self.root / "tls"
        return "\n".join([
            f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}",
            f"listeners.ssl.1 = 127.0.0.1:{self.tls_port}",
            f"ssl_options.cacertfile = {tls / 'ca.pem'}",
            f"ssl_options.certfile = {tls / 'server.pem'}",
            f"ssl_options.keyfile = {tls / 'server.key'}",
            "ssl_options.verify = verify_none",
            "ssl_options.fail_if_no_peer_cert = false",
            "definitions.import_backend = local_filesystem",
            f"definitions.local.path = {self.root / 'definitions.json'}",
            "log.console = false",
            "log.file.level = info",
            "",
        ])

    def _await_login(self) -> None:
        import pika

        deadline = time.monotonic() + BOOT_TIMEOUT
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                raise NodeExited(f"the private RabbitMQ node exited with {self._server.returncode}; "
                                   f"see {self.root / 'log'}")
            try:
                pika.BlockingConnection(pika.URLParameters(self.url + "?connection_attempts=1&socket_timeout=2")).close()
                return
            except Exception as exc:  # not listening yet, or listening before the definitions are in
                last = exc
                time.sleep(0.1)
        raise RuntimeError(f"the private RabbitMQ node did not accept a login within {BOOT_TIMEOUT:.0f} s ({last!r}); "
                           f"see {self.root / 'log'}")

    def _watch_group(self) -> None:
        """If this process dies without stop(), the pipe closes and the watchdog kills the node."""
        read_end, write_end = os.pipe()
        code = ("import os, sys\n"
                f"sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n"
                "from tests.broker_node import kill_marked\n"
                "os.read(0, 1)\n"  # returns at EOF: the test run is gone, or stop() is done
                f"kill_marked({self._marker()!r})\n")
        self._watchdog = subprocess.Popen([sys.executable, "-c", code], stdin=read_end, start_new_session=True,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(read_end)
        self._lifeline = write_end

    def _marker(self) -> bytes:
        # Every process of the node inherits this variable, even those that leave its process group
        # (erl_child_setup and inet_gethost start groups of their own), and so do rabbitmqctl's.
        return f"RABBITMQ_NODENAME={self.nodename}".encode()

    def stop(self, check: bool = True) -> None:
        """Stop the node and its epmd; with ``check``, fail if any of their processes outlives them."""
        if self._server is not None and self._server.poll() is None:
            # The Erlang VM shuts down in order on SIGTERM (init:stop/0), like `rabbitmqctl stop`.
            self._server.send_signal(signal.SIGTERM)
            try:
                self._server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
        if self._epmd is not None and self._epmd.poll() is None:
            self._epmd.terminate()
            self._epmd.wait(timeout=10)
        # Erlang's helper programs (inet_gethost) exit when they read EOF from the VM: give them a moment.
        deadline = time.monotonic() + 10
        while marked_processes(self._marker()) and time.monotonic() < deadline:
            time.sleep(0.05)
        survivors = marked_processes(self._marker())
        kill_marked(self._marker())
        if self._lifeline is not None:
            os.close(self._lifeline)  # the watchdog wakes, finds nothing to kill, exits
            self._lifeline = None
            self._watchdog.wait(timeout=10)
        if check and survivors:
            raise AssertionError(f"the private RabbitMQ node left processes behind: {survivors}")

    # --- control (rabbitmqctl) -----------------------------------------

    def ctl(self, *args: str) -> str:
        proc = subprocess.run([str(RABBITMQ_BIN / "rabbitmqctl"), "--quiet", *args], env=self.env(),
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
        return proc.stdout

    def stop_app(self) -> None:
        """A broker outage: the node stays up, its listeners close and clients are disconnected."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self._await_login()

    def set_policy(self, name: str, pattern: str, definition: dict) -> None:
        self.ctl("set_policy", "-p", VHOST, "--apply-to", "queues", name, pattern, json.dumps(definition))

    def policy_of(self, queue: str) -> str | None:
        """The policy in force on ``queue`` (the broker applies a new one asynchronously)."""
        out = self.ctl("list_queues", "-p", VHOST, "name", "policy", "--formatter", "json")
        return next((row["policy"] or None for row in json.loads(out) if row["name"] == queue), None)

    def clear_policy(self, name: str) -> None:
        self.ctl("clear_policy", "-p", VHOST, name)

    def list_queues(self) -> dict[str, int]:
        """Queue name -> messages (ready and unacknowledged), as the broker counts them."""
        out = self.ctl("list_queues", "-p", VHOST, "name", "messages", "--formatter", "json")
        return {row["name"]: row["messages"] for row in json.loads(out)}


def marked_processes(marker: bytes) -> list[str]:
    """Processes whose environment holds ``marker`` (a whole NAME=value entry), as 'pid command'."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(f"{entry.name} {(entry / 'comm').read_text().strip()}")
        except OSError:
            continue  # exited while we looked, or not ours to read
    return found


def kill_marked(marker: bytes) -> None:
    for process in marked_processes(marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(process.split()[0]), signal.SIGKILL)


@dataclass
class ExternalBroker:
    """A broker given by ETLCTL_TEST_AMQP_URL: the tests use it, and control nothing."""

    url: str
    controllable: bool = False
    tls_port: int | None = None

    def url_for(self, password: str | None = None, vhost: str | None = None, user: str | None = None) -> str:
        parts = urllib.parse.urlsplit(self.url)
        name = urllib.parse.quote(user if user is not None else urllib.parse.unquote(parts.username or "guest"), safe="")
        secret = urllib.parse.quote(password if password is not None else urllib.parse.unquote(parts.password or ""),
                                    safe="")
        path = "/" + urllib.parse.quote(vhost, safe="") if vhost is not None else parts.path
        netloc = f"{name}:{secret}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit((parts.scheme, netloc, path, parts.query, ""))

    @property
    def password(self) -> str:
        return urllib.parse.unquote(urllib.parse.urlsplit(self.url).password or "")

    def stop(self, check: bool = True) -> None:
        pass


def make_certificates(folder: Path) -> None:
    """A throw-away CA and a server certificate for localhost and 127.0.0.1, with openssl."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, stdin=subprocess.DEVNULL)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=etlctl test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (folder / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "authorityKeyIdentifier=keyid\n"
        "subjectKeyIdentifier=hash\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "server.ext")
