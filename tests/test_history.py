"""etlctl history: a job's audit rows as a table and JSON, --since, --limit."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone

import pytest

from tests.helpers import running

NOW = datetime(2026, 11, 28, 15, 0, 0, tzinfo=timezone.utc)
FROZEN_AT = NOW




@pytest.fixture
def lifecycle_job(db, cli, frozen):
    """A job taken through one run: started, a phase set, completed, checked, reset by the sweep."""
    tenant = db.tenant("acme")
    job = db.job("Jira", tenant, db.integration(tenant), status=running(token="tok-1", value="finished",
                                                                        jira_dev_status__embedding="running"))
    assert cli("step", job, "jira_dev_status", "embedding", "finished", "--token", "tok-1").exit_code == 0
    frozen.frozen.tick(60)
    assert cli("complete", job, "--token", "tok-1").exit_code == 0
    frozen.frozen.tick(30)
    assert cli("sweep").exit_code == 0  # check 1 passes: the cool-down starts
    frozen.frozen.tick(30)
    assert cli("sweep").exit_code == 0  # reset
    return job


def test_history_table(db, cli, lifecycle_job):
    job = lifecycle_job
    who = f"{socket.gethostname()}:{os.getpid()}"
    result = cli("history", job)
    assert (result.exit_code, result.stderr) == (0, "")
    rows = [line.split("  ") for line in result.stdout.splitlines()]
    cells = [[c.strip() for c in row if c.strip()] for row in rows]
    assert cells[0] == ["TIME", "FROM → TO", "TOKEN", "COMMAND", "HOST", "WHO", "DETAIL"]
    assert cells[2:] == [
        ["2026-11-28 15:00:00", "RUNNING → RUNNING", "tok-1", "step", who, "postgres",
         "jira_dev_status.embedding running → finished"],
        ["2026-11-28 15:01:00", "RUNNING → FINISHED", "tok-1", "complete", who, "postgres",
         "completed; last_sync_date -"],
        ["2026-11-28 15:01:30", "FINISHED → FINISHED", "tok-1", "sweep", who, "postgres",
         "cooldown, next at 15:02:00: check 1 of 5: all steps finished"],
        ["2026-11-28 15:02:00", "FINISHED → READY", "tok-1", "sweep", who, "postgres",
         "reset: cool-down over, all steps finished"],
    ]


def test_history_json(db, cli, lifecycle_job):
    data = cli("history", lifecycle_job, "--json").json()
    assert [(r["from"], r["to"], r["command"]) for r in data] == [
        ("RUNNING", "RUNNING", "step"), ("RUNNING", "FINISHED", "complete"),
        ("FINISHED", "FINISHED", "sweep"), ("FINISHED", "READY", "sweep")]
    first = data[0]
    assert set(first) == {"id", "at", "job_id", "tenant_id", "from", "to", "token", "command", "host", "pid", "who",
                          "details"}
    assert (first["at"], first["token"], first["who"], first["pid"]) == (
        "2026-11-28T15:00:00+00:00", "tok-1", "postgres", os.getpid())
    assert first["details"] == {"step": "jira_dev_status", "phase": "embedding", "from": "running", "to": "finished"}


def test_since_and_limit(db, cli, lifecycle_job):
    def commands(*args):
        result = cli("history", lifecycle_job, "--json", *args)
        assert result.exit_code == 0, result.stderr
        return [r["command"] for r in result.json()]

    assert commands("--since", "2026-11-28T15:01:00+00:00") == ["complete", "sweep", "sweep"]
    assert commands("--since", "2026-11-28 10:01:30", "--db-timezone", "America/New_York") == ["sweep", "sweep"]
    assert commands("--since", "45s") == ["sweep", "sweep"]  # now is 15:02:00
    assert commands("--limit", "2") == ["sweep", "sweep"]  # the newest two, oldest first
    limited = cli("history", lifecycle_job, "--limit", "1")
    assert limited.stderr == "showing the newest 1 of 4 changes (use --limit or --since)\n"


def test_no_rows_unknown_jobs_and_deleted_jobs(db, cli, lifecycle_job):
    quiet = db.job("Quiet")
    result = cli("history", quiet)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", f"job {quiet}: no audited changes\n")
    assert cli("history", quiet, "--json").json() == []
    missing = cli("history", "999")
    assert (missing.exit_code, missing.stderr) == (5, "etlctl: no job 999\n")
    db.sql("DELETE FROM etl_jobs WHERE id = %s", lifecycle_job)
    assert len(cli("history", lifecycle_job, "--json").json()) == 4  # history outlives the job


def test_a_bad_since_is_a_usage_error(cli):
    result = cli("history", "1", "--since", "yesterday")
    assert (result.exit_code, result.stderr) == (
        2, "etlctl: invalid --since 'yesterday': expected an ISO time such as 2026-11-28T10:00:00-05:00 or a duration "
           "ago such as 30m or 2h\n")
