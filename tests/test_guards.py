"""The guards of the reset flow's writes, each proven by a writer that acts between the read and the write
(issue 11, §5: a mutation pass removed each guard and no test noticed).

- a sweep's write guards on the reset keys that were absent when it read the job (`absent`);
- a give-up guards on the very steps that were judged (their md5), like a reset;
- wait-and-reset stops when, between two of its polls, the job was reset, restarted and finished again:
  the run it waits for (its token) is over.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.helpers import finished, running

START = datetime(2026, 11, 28, 15, 0, 0, tzinfo=timezone.utc)
FROZEN_AT = START


def naive(seconds: float) -> str:
    return (START + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture
def between_read_and_write(monkeypatch):
    """`between_read_and_write(action)`: run `action` once, after the command has read and decided, just
    before its guarded write (flow.apply, which sweep, reset and wait-and-reset all write through)."""
    from etlctl.actions import flow, wait_and_reset

    real_apply = flow.apply
    pending = []

    def apply_after(session, transitions, skip_locked=False):
        while pending:
            pending.pop()()
        return real_apply(session, transitions, skip_locked)

    monkeypatch.setattr(flow, "apply", apply_after)
    monkeypatch.setattr(wait_and_reset, "apply", apply_after)
    return pending.append


def test_a_reset_key_another_writer_adds_between_a_sweeps_read_and_write_is_kept(db, cli, frozen, between_read_and_write):
    """The job finished 10 s ago with no pending reset: the sweep schedules its first check. Meanwhile the existing
    system's completion writes its own reset_deadline and reset_attempt (keys that were absent when the sweep
    read the job): the sweep's write must not replace them."""
    job = db.job("Jira", db.tenant("acme"), status=finished(token="run-1"), last_run_finished_at=naive(-10))
    theirs = (START + timedelta(seconds=45)).isoformat()
    between_read_and_write(lambda: db.sql(
        "UPDATE etl_jobs SET status = status || jsonb_build_object('reset_deadline', %s::text, 'reset_attempt', 0) "
        "WHERE id = %s", theirs, job))
    result = cli("sweep", "--json")
    assert result.exit_code == 0, result.stderr
    assert [(r["job_id"], r["action"], r["applied"]) for r in result.json()] == [(job, "lost-race", False)]
    status = db.status(job)
    assert (status["reset_deadline"], status["reset_attempt"]) == (theirs, 0) and "reset_stage" not in status
    assert db.audit(job) == []
    # The next tick decides on what is there now: the other writer's deadline, not yet due.
    assert cli("sweep", "--json").json() == []


def test_a_step_that_changes_between_the_give_up_decision_and_its_write_blocks_the_give_up(
        db, cli, frozen, between_read_and_write):
    """The last check fails on a running phase; before the give-up is written, the worker reports it finished:
    giving up now would record an error about steps that are no longer so."""
    status = finished(token="run-1", jira_dev_status__embedding="running")
    status.update(reset_stage="check", reset_attempt=4, reset_deadline=(START - timedelta(seconds=1)).isoformat(),
                  reset_token="run-1")
    job = db.job("Jira", db.tenant("acme"), status=status, last_run_finished_at=naive(-900))
    between_read_and_write(lambda: db.sql(
        "UPDATE etl_jobs SET status = jsonb_set(status, '{steps,jira_dev_status,embedding}', '\"finished\"') "
        "WHERE id = %s", job))
    result = cli("sweep", "--json")
    assert [(r["job_id"], r["action"], r["applied"]) for r in result.json()] == [(job, "lost-race", False)]
    after = db.row(job)
    assert after["status"]["reset_stage"] == "check" and after["error_message"] is None
    assert db.audit(job) == []
    # On the next tick the check passes.
    assert [r["action"] for r in cli("sweep", "--json").json()] == ["cooldown"]


def test_wait_and_reset_stops_when_its_run_was_reset_restarted_and_finished_between_two_polls(db, cli, frozen):
    """It waits for run-1's first check. Meanwhile someone resets run-1, the scheduler starts run-2 and it
    finishes: the job is FINISHED again, and its reset keys are run-2's. wait-and-reset must see the token
    change and leave run-2 alone: run-2's reset is run-2's flow, with its own delay."""
    job = db.job("Jira", db.tenant("acme"), status=running(token="run-1"))
    assert cli("complete", job, "--token", "run-1").exit_code == 0
    original = frozen.sleep

    def sleep_while_the_world_moves_on(seconds):
        original(seconds)
        if len(frozen.sleeps) == 1:
            assert cli("reset", job, "--force").exit_code == 0
            db.set_status(job, running(token="run-2"))
            assert cli("complete", job, "--token", "run-2", "--delay", "600").exit_code == 0

    frozen.sleep = sleep_while_the_world_moves_on
    result = cli("wait-and-reset", job)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"job {job} (Jira, tenant acme) was reset or restarted by someone else: it is FINISHED now\n"
    assert frozen.sleeps == [30]  # one wait for run-1, none for run-2
    status = db.status(job)
    assert (status["overall"], status["token"], status["reset_stage"], status["reset_token"]) == (
        "FINISHED", "run-2", "check", "run-2")
    assert [a["token"] for a in db.audit(job) if a["command"] == "wait-and-reset"] == []
