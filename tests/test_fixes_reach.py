"""The commands doctor and why print reach the database the diagnosis came from, run as printed in a
shell whose own environment names another database (another terminal at 3 a.m.)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import Cli, finished
from tests.test_doctor import naive

BIN = str(Path(sys.executable).parent)  # where `etlctl` is, as in the clone's .venv


def run_as_printed(command: str, env: dict) -> subprocess.CompletedProcess:
    """The printed line, through sh, in an environment of its own: none of this test's ETLCTL_* or PG*."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ETLCTL_", "PG"))}
    clean["PATH"] = BIN + os.pathsep + clean.get("PATH", "")
    return subprocess.run(["sh", "-c", command], env={**clean, **env}, capture_output=True, text=True, timeout=60)


def stuck_and_inactive(db):
    acme = db.tenant("acme")
    stuck = db.job("Jira", acme, db.integration(acme), status=finished(), last_run_finished_at=naive(-7200))
    off = db.tenant("off", active=False)
    db.job("Jira", off, db.integration(off), next_run=naive(-3600))
    return stuck, off


def test_doctors_fixes_for_a_dsn_database_change_it_from_a_shell_aimed_at_another(db, blank_db, frozen):
    stuck, off = stuck_and_inactive(db)
    other = blank_db  # what the other terminal's ETLCTL_DSN and PG* name
    found = {f["code"]: f for f in Cli(None).run("--dsn", db.dsn, "doctor", "--json").json()["findings"]}
    shown = f"'host={db.server.socket_dir} port={db.server.port} dbname={db.name} user=postgres'"
    reset = found["stuck_finished"]["fix"][0]["command"]
    activate = found["not_starting"]["fix"][0]["command"]
    assert reset == f"etlctl --dsn {shown} reset {stuck}"
    assert activate == f"psql {shown} -c 'UPDATE tenants SET active = true WHERE id = {off}'"

    elsewhere = {"ETLCTL_DSN": other.dsn, "PGHOST": other.server.socket_dir, "PGPORT": str(other.server.port),
                 "PGDATABASE": other.name, "PGUSER": "postgres"}
    done = run_as_printed(reset, elsewhere)
    assert (done.returncode, done.stderr) == (0, "")
    done = run_as_printed(activate, elsewhere)
    assert (done.returncode, done.stderr) == (0, "")
    assert db.status(stuck)["overall"] == "READY"
    assert db.value("SELECT active FROM tenants WHERE id = %s", off) is True


def test_fixes_name_the_database_of_the_environment_too(db, frozen):
    """ETLCTL_DSN, or libpq's PG* variables: the line copied into another terminal reaches this database."""
    stuck, _ = stuck_and_inactive(db)
    shown = f"'host={db.server.socket_dir} port={db.server.port} dbname={db.name} user=postgres'"
    from_dsn = Cli(db.dsn).run("doctor", "--json").json()["findings"][0]["fix"][0]["command"]
    libpq = {"PGHOST": db.server.socket_dir, "PGPORT": str(db.server.port), "PGDATABASE": db.name,
             "PGUSER": "postgres", "PGPASSWORD": "not-printed"}
    from_libpq = Cli(None, libpq).run("doctor", "--json").json()["findings"][0]["fix"][0]["command"]
    assert from_dsn == from_libpq == f"etlctl --dsn {shown} reset {stuck}"


def test_a_password_in_the_dsn_is_never_printed_in_a_fix(db, frozen):
    stuck, _ = stuck_and_inactive(db)
    result = Cli(None).run("--dsn", db.dsn + " password=hunter2", "doctor")
    assert result.exit_code == 3
    assert "hunter2" not in result.stdout + result.stderr
    assert f"  fix:   etlctl --dsn 'host={db.server.socket_dir} port={db.server.port} dbname={db.name} " \
           f"user=postgres' reset {stuck}" in result.stdout.splitlines()


def test_whys_commands_name_the_database(db, frozen):
    acme = db.tenant("acme")
    gave_up = finished(jira_dev_status__embedding="running")
    gave_up.update(reset_stage="gave_up", reset_token="tok-1", reset_gave_up_at="2026-11-28T14:00:00+00:00")
    job = db.job("Jira", acme, db.integration(acme), status=gave_up, last_run_finished_at=naive(-7200))
    result = Cli(None).run("--dsn", db.dsn, "why", job)
    shown = f"'host={db.server.socket_dir} port={db.server.port} dbname={db.name} user=postgres'"
    assert result.exit_code == 0, result.stderr
    assert (f"when the steps have finished, run `etlctl --dsn {shown} reset {job}`; "
            f"or `etlctl --dsn {shown} reset {job} --force` (overrides the check)") in result.stdout


def test_a_fix_found_through_a_dsn_without_a_port_carries_the_port_it_reached(db, frozen):
    """The DSN names no port (PGPORT chose it): run in a shell whose PGPORT is another, the fix still
    reaches this database, not whatever listens there."""
    stuck, _ = stuck_and_inactive(db)
    portless = f"host={db.server.socket_dir} dbname={db.name} user=postgres"
    found = Cli(None, {"PGPORT": str(db.server.port)}).run("--dsn", portless, "doctor", "--json").json()
    reset = found["findings"][0]["fix"][0]["command"]
    assert reset == (f"etlctl --dsn 'host={db.server.socket_dir} port={db.server.port} dbname={db.name} "
                     f"user=postgres' reset {stuck}")
    done = run_as_printed(reset, {"PGPORT": str(db.server.port + 1)})  # nothing listens there
    assert (done.returncode, done.stderr) == (0, "")
    assert db.status(stuck)["overall"] == "READY"


def test_a_fix_found_through_pg_variables_without_pgport_carries_the_port_and_host_it_reached():
    from etlctl.store.reach import printable_conninfo
    from etlctl.store.target import Target

    environ = {"PGDATABASE": "etl", "PGUSER": "etl"}  # no PGHOST, no PGPORT: libpq's defaults chose them
    assert printable_conninfo(Target("", "PG*"), environ, reached=("/run/postgresql", 5433)) == \
        "host=/run/postgresql port=5433 dbname=etl user=etl"
    environ["PGHOST"] = "db.internal"
    assert printable_conninfo(Target("", "PG*"), environ, reached=("db.internal", 5433)) == \
        "host=db.internal port=5433 dbname=etl user=etl"


def test_a_multi_host_dsn_without_ports_is_printed_as_given():
    from etlctl.store.reach import printable_conninfo
    from etlctl.store.target import Target

    given = "host=a,b dbname=etl target_session_attrs=read-write"
    assert printable_conninfo(Target(given, "a,b"), {}, reached=("b", 5432)) == \
        "host=a,b dbname=etl target_session_attrs=read-write"
