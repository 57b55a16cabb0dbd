"""A password given in a DSN is never printed, against a server that really checks passwords.

The embedded server has no TCP listener and admits its owner by peer
authentication, where a password is never even looked at. This test makes a
server of its own with a TCP listener on a private port of 127.0.0.1 and
scram-sha-256 for it, so that a wrong password is refused, a right one is
checked and accepted, and a server message that quotes the password (here: a
database named like it) is scrubbed before anything is shown.
"""

from __future__ import annotations

import socket
import uuid

import psycopg
import pytest

from etlctl.store import embedded
from tests.helpers import Cli, run_process

PASSWORD = "Pa55-w0rd-" + uuid.uuid4().hex[:8]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def scram_server(tmp_path_factory, scratch):
    """(host, port, user) of a server that checks passwords with scram-sha-256 over TCP."""
    home = scratch / f"scram-{uuid.uuid4().hex[:8]}"
    found = embedded.ensure_running(home, create=True)
    port = free_port()
    data = embedded.pgdata(home)
    with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write(f"\n# test_passwords: a TCP listener that checks passwords\nlisten_addresses = '127.0.0.1'\n"
                   f"port = {port}\npassword_encryption = 'scram-sha-256'\n")
    with open(data / "pg_hba.conf", "a", encoding="utf-8") as hba:
        hba.write("host    all       all   127.0.0.1/32   scram-sha-256\n")
    embedded.stop(home)
    found = embedded.ensure_running(home)
    assert found.port == port
    with psycopg.connect(found.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE pw_user LOGIN PASSWORD '{PASSWORD}'")
        conn.execute("CREATE DATABASE pw_db OWNER pw_user")
        assert conn.execute("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'pw_user'"
                            ).fetchone()[0]
    try:
        yield "127.0.0.1", port, "pw_user"
    finally:
        embedded.stop(home)
        import shutil

        shutil.rmtree(home, ignore_errors=True)


def dsns(host, port, user, password, dbname="pw_db"):
    from urllib.parse import quote

    yield f"host={host} port={port} user={user} password={password} dbname={dbname}"
    yield f"postgresql://{user}:{quote(password, safe='')}@{host}:{port}/{dbname}"


def shown(result) -> str:
    return result.stdout + result.stderr


def test_the_right_password_is_checked_and_accepted(scram_server):
    host, port, user = scram_server
    for dsn in dsns(host, port, user, PASSWORD):
        cli = Cli(dsn)
        init = cli("db", "init")
        assert init.exit_code == 0, init.stderr
        assert PASSWORD not in shown(init)
        status = cli("status")
        assert (status.exit_code, status.stderr) == (0, "no jobs\n")


def test_a_wrong_password_is_refused_and_never_printed(scram_server):
    host, port, user = scram_server
    wrong = "Wr0ng-" + PASSWORD
    for dsn in dsns(host, port, user, wrong):
        for args in (["status"], ["-v", "status"], ["doctor", "--json"], ["sweep"]):
            result = Cli(dsn)(*args)
            assert result.exit_code == 6, (args, result.stderr)
            assert result.stderr.startswith(f"etlctl: cannot reach the database ({user}@{host}:{port}/pw_db): ")
            assert "password authentication failed" in result.stderr
            assert wrong not in shown(result) and "Wr0ng" not in shown(result), args
        process = run_process(["-v", "status"], dsn)
        assert process.exit_code == 6 and wrong not in shown(process)


def test_a_server_message_that_quotes_the_password_is_scrubbed(scram_server):
    """The password is right (the server checks it), but the database is named like it: the server's refusal
    quotes the name, so the password, and etlctl must print *** instead."""
    host, port, user = scram_server
    for dsn in dsns(host, port, user, PASSWORD, dbname=PASSWORD):
        for args in (["status"], ["-v", "status"], ["-v", "doctor"]):
            result = Cli(dsn)(*args)
            assert result.exit_code == 6, (args, result.stderr)
            assert PASSWORD not in shown(result), args
            assert 'database "***" does not exist' in result.stderr, result.stderr
