"""Helpers for tests: the server, per-test databases, running etlctl."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from click.testing import CliRunner
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from etlctl.cli import cli as etlctl_cli
from etlctl.store import embedded
from etlctl.store.clock import DatabaseClock

REPO = Path(__file__).resolve().parent.parent

JIRA_STEPS = ["jira_projects_and_issue_types", "jira_statuses_and_relationships",
              "jira_issues_with_changelogs", "jira_dev_status"]
GITHUB_STEPS = ["github_repositories", "github_prs_commits_reviews_comments"]
PHASES = ["extraction", "transform", "embedding"]


def scratch_directory() -> Path:
    """A folder for embedded servers' homes, removed by the caller.

    Under root the server runs as the system user embedded_postgres, which must be able to enter
    ETLCTL_HOME's parents, and etlctl never opens them itself: so not pytest's tmp_path (under a
    0700 /tmp/pytest-of-root), but a folder of our own that anyone may enter (0711), not list."""
    folder = Path(tempfile.mkdtemp(prefix="etlctl-tests-"))
    os.chmod(folder, 0o711)
    return folder


@dataclass
class Server:
    home: Path
    socket_dir: str
    port: int

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.port} user=postgres dbname={dbname}"

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            embedded.stop(self.home)
        shutil.rmtree(self.home, ignore_errors=True)


def start_server(home: Path) -> Server:
    """The tests' server: an embedded server made exactly as `etlctl db init` makes one."""
    found = embedded.ensure_running(home, create=True)
    server = Server(home, found.socket_dir, found.port)
    with admin_connect(server) as conn:
        # Durability is not under test; speed is welcome.
        for setting in ("fsync = off", "synchronous_commit = off", "full_page_writes = off"):
            conn.execute(f"ALTER SYSTEM SET {setting}")
        conn.execute("SELECT pg_reload_conf()")
    return server


@contextlib.contextmanager
def admin_connect(server: Server, dbname: str = "postgres"):
    with psycopg.connect(server.dsn(dbname), autocommit=True) as conn:
        yield conn


class TestDatabase:
    """A database of its own for one test, with helpers to seed and inspect rows."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, server: Server, name: str) -> None:
        self.server = server
        self.name = name
        self.dsn = server.dsn(name)
        self.conn = psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row)

    def drop(self) -> None:
        self.conn.close()
        with admin_connect(self.server) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")

    def sql(self, query: str, *params) -> list[dict]:
        cur = self.conn.execute(query, params or None)
        return cur.fetchall() if cur.description else []

    def one(self, query: str, *params) -> dict | None:
        rows = self.sql(query, *params)
        return rows[0] if rows else None

    def value(self, query: str, *params):
        row = self.one(query, *params)
        return None if row is None else next(iter(row.values()))

    # --- seeding -------------------------------------------------------

    def tenant(self, name: str = "acme", active: bool = True) -> int:
        return self.value("INSERT INTO tenants (name, active) VALUES (%s, %s) RETURNING id", name, active)

    def integration(self, tenant_id: int, provider: str = "Jira", active: bool = True) -> int:
        return self.value(
            "INSERT INTO integrations (provider, type, tenant_id, active) VALUES (%s, 'Data', %s, %s) RETURNING id",
            provider, tenant_id, active,
        )

    def job(self, name: str = "Jira", tenant_id: int | None = None, integration_id: int | None = None,
            status: dict | None = None, **columns) -> int:
        if tenant_id is None:
            tenant_id = self.tenant(f"tenant-{name}-{os.urandom(3).hex()}")
        cols = {"job_name": name, "tenant_id": tenant_id, "integration_id": integration_id,
                "status": Jsonb(status if status is not None else {"overall": "READY", "steps": {}}), **columns}
        names = ", ".join(cols)
        marks = ", ".join(["%s"] * len(cols))
        return self.value(f"INSERT INTO etl_jobs ({names}) VALUES ({marks}) RETURNING id", *cols.values())

    def status(self, job_id: int) -> dict:
        return self.value("SELECT status FROM etl_jobs WHERE id = %s", job_id)

    def row(self, job_id: int) -> dict:
        return self.one("SELECT * FROM etl_jobs WHERE id = %s", job_id)

    def audit(self, job_id: int | None = None) -> list[dict]:
        if job_id is None:
            return self.sql("SELECT * FROM etlctl.audit ORDER BY id")
        return self.sql("SELECT * FROM etlctl.audit WHERE job_id = %s ORDER BY id", job_id)

    def set_status(self, job_id: int, status: dict) -> None:
        self.sql("UPDATE etl_jobs SET status = %s WHERE id = %s", Jsonb(status), job_id)


def steps(names, value: str = "finished", **overrides) -> dict:
    """A steps object: every phase of every step `value`; overrides as {"step.phase": value}."""
    out = {name: {"order": n, **{p: value for p in PHASES}} for n, name in enumerate(names, 1)}
    for key, v in overrides.items():
        step, phase = key.split("__")
        out[step][phase] = v
    return out


def running(names=JIRA_STEPS, value="finished", token="tok-1", **overrides) -> dict:
    return {"overall": "RUNNING", "token": token, "steps": steps(names, value, **overrides)}


def finished(names=JIRA_STEPS, value="finished", token="tok-1", **overrides) -> dict:
    return {"overall": "FINISHED", "token": token, "steps": steps(names, value, **overrides)}


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


class Cli:
    """etlctl in-process through click's CliRunner: exit code, stdout and stderr apart."""

    def __init__(self, dsn: str | None, env: dict | None = None, unaimed: bool = False) -> None:
        self.dsn = dsn
        self.env = env or {}
        # Fixes name their database (`etlctl --dsn '...' reset 7`, `psql '...' -c ...`): with unaimed, this
        # one's name is taken out of the output, so that a test reads the fix itself (test_fixes_reach.py
        # tests the name).
        self.unaimed = unaimed

    def run(self, *args, env: dict | None = None, input: str | None = None) -> Result:
        runner = CliRunner()
        full_env = {**({"ETLCTL_DSN": self.dsn} if self.dsn else {}), **self.env, **(env or {})}
        result = runner.invoke(etlctl_cli, [str(a) for a in args], env=full_env, input=input, catch_exceptions=False)
        if self.unaimed and self.dsn:
            return Result(result.exit_code, self._unaim(result.stdout), self._unaim(result.stderr))
        return Result(result.exit_code, result.stdout, result.stderr)

    def _unaim(self, text: str) -> str:
        from etlctl.core.shell import quote
        from etlctl.store.reach import dsn_without_password

        shown = quote(dsn_without_password(self.dsn)[0])
        return text.replace(f"etlctl --dsn {shown} ", "etlctl ").replace(f"psql {shown} ", "psql ")

    __call__ = run


def etlctl_process(args, dsn: str | None, env: dict | None = None, **popen) -> subprocess.Popen:
    """etlctl as a separate process (for kill -9, signals and real concurrency)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ETLCTL_", "PG"))}
    full_env.update({"ETLCTL_DSN": dsn} if dsn else {})
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "etlctl", *[str(a) for a in args]], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def wait_until(predicate, timeout: float = 20.0, every: float = 0.05) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return False


def run_process(args, dsn: str | None, env: dict | None = None, timeout: float = 60) -> Result:
    proc = etlctl_process(args, dsn, env)
    out, err = proc.communicate(timeout=timeout)
    return Result(proc.returncode, out, err)


class FrozenClock(DatabaseClock):
    """Time under freezegun: the database sees the frozen time, and sleeping moves it on."""

    def __init__(self, frozen) -> None:
        self.frozen = frozen
        self.sleeps: list[float] = []
        self.waits: list[float] = []  # etlctl run's waits for an event (clock.wait)

    def sql_now(self) -> datetime:
        return datetime.now(timezone.utc)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.frozen.tick(timedelta(seconds=seconds))

    def wait(self, until_event, seconds: float) -> bool:
        """Look for an event once (no real waiting); none there: frozen time moves to the end of the wait."""
        self.waits.append(seconds)
        if until_event(0.0):
            return True
        self.frozen.tick(timedelta(seconds=seconds))
        return False


# The steps of the existing system's seeded kinds (existing-system-contract.md §3).
JIRA5_STEPS = [*JIRA_STEPS, "jira_sprint_reports"]
NEW_YORK = {"ETLCTL_DB_TIMEZONE": "America/New_York"}
