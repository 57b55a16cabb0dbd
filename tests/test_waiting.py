"""check --retry, wait-and-reset and sweep under frozen time: no real sleeping.

The clock seam (etlctl.clock) hands the frozen time to the database, and each
sleep moves frozen time forward, so the waits the code asks for can be
asserted exactly.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.helpers import finished, running

START = datetime(2026, 11, 28, 15, 0, 0, tzinfo=timezone.utc)
FROZEN_AT = START






def deadline_of(db, job):
    return datetime.fromisoformat(db.status(job)["reset_deadline"])


# --- check --retry -------------------------------------------------------------


def test_check_retry_waits_30_60_180_300_then_gives_up(db, cli, frozen, acme):
    job = db.job("Jira", acme, status=finished(jira_dev_status__embedding="running"))
    result = cli("check", job, "--retry")
    assert frozen.sleeps == [30, 60, 180, 300]
    assert result.exit_code == 3
    assert result.stderr.splitlines()[0] == (
        "check 1 of 5: not finished (jira_dev_status.embedding: still running); next check in 30s")
    assert result.stderr.splitlines()[-1] == (
        f"etlctl: job {job} (Jira, tenant acme) not finished after 5 checks: jira_dev_status.embedding: still running")


def test_check_retry_stops_at_once_on_a_failed_phase(db, cli, frozen, acme):
    job = db.job("Jira", acme, status=finished(jira_dev_status__transform="failed"))
    result = cli("check", job, "--retry")
    assert frozen.sleeps == []
    assert result.exit_code == 3
    assert result.stderr == (f"etlctl: job {job} (Jira, tenant acme) not finished after 1 check (a phase failed: waiting "
                             "cannot help): jira_dev_status.transform: failed\n")


def test_check_retry_succeeds_when_the_step_finishes_meanwhile(db, cli, frozen, acme):
    job = db.job("Jira", acme, status=finished(jira_dev_status__embedding="running"))
    original = frozen.sleep

    def sleep_then_finish(seconds):
        original(seconds)
        if len(frozen.sleeps) == 2:
            db.sql("UPDATE etl_jobs SET status = jsonb_set(status, '{steps,jira_dev_status,embedding}', '\"finished\"')")

    frozen.sleep = sleep_then_finish
    result = cli("check", job, "--retry", "--json")
    assert result.exit_code == 0
    assert frozen.sleeps == [30, 60]
    assert result.json()["checks"] == 3


def test_check_retry_uses_the_backoff_flag_and_env(db, cli, frozen, acme):
    job = db.job("Jira", acme, status=finished(jira_dev_status__embedding="running"))
    assert cli("check", job, "--retry", "--backoff", "1,2m").exit_code == 3
    assert frozen.sleeps == [1, 120]
    frozen.sleeps.clear()
    assert cli("check", job, "--retry", env={"ETLCTL_BACKOFF": "5"}).exit_code == 3
    assert frozen.sleeps == [5]


# --- wait-and-reset ----------------------------------------------------------------


def test_wait_and_reset_waits_the_delay_checks_counts_down_and_resets(db, cli, frozen, acme):
    job = db.job("Jira", acme, status=running(), schedule_interval_minutes=60)
    assert cli("complete", job).exit_code == 0
    assert deadline_of(db, job) == START + timedelta(seconds=30)

    result = cli("wait-and-reset", job)
    assert result.exit_code == 0, result.stderr
    assert frozen.sleeps == [30, 10, 10, 10]  # the delay, then the 30 s countdown in 10 s lines
    assert result.stderr == (
        f"job {job} (Jira, tenant acme): waiting for check 1 of 5 at 15:00:30 (in 30s)\n"
        f"job {job} (Jira, tenant acme): check 1 of 5: all steps finished\n"
        "Job completed. Resetting in 30 seconds...\n"
        "Job completed. Resetting in 20 seconds...\n"
        "Job completed. Resetting in 10 seconds...\n"
    )
    assert result.stdout == f"reset job {job} (Jira, tenant acme) to READY; next run at 2026-11-28 16:01:00 (in 1h)\n"
    row = db.row(job)
    assert row["status"]["overall"] == "READY"
    assert str(row["next_run"]) == "2026-11-28 16:01:00"
    transitions = [(a["from_state"], a["to_state"], a["details"].get("action")) for a in db.audit(job)]
    assert transitions == [("RUNNING", "FINISHED", None), ("FINISHED", "FINISHED", "cooldown"), ("FINISHED", "READY", "reset")]


def test_wait_and_reset_gives_up_records_the_error_and_stays_finished(db, cli, frozen, acme):
    job = db.job("Jira", acme, status=finished(jira_dev_status__embedding="running"),
                 last_run_finished_at=START.replace(tzinfo=None))
    result = cli("wait-and-reset", job)
    assert result.exit_code == 3
    assert frozen.sleeps == [30, 30, 60, 180, 300]
    reason = "gave up after 5 checks: jira_dev_status.embedding: still running"
    assert result.stderr.splitlines()[-1] == f"etlctl: job {job} (Jira, tenant acme): {reason}"
    row = db.row(job)
    assert row["status"]["overall"] == "FINISHED" and row["status"]["reset_stage"] == "gave_up"
    assert row["error_message"] == reason
    actions = [a["details"]["action"] for a in db.audit(job)]
    assert actions == ["schedule", "retry", "retry", "retry", "retry", "give_up"]
    # A gave-up job waits for a person: the next wait-and-reset says so at once.
    again = cli("wait-and-reset", job)
    assert again.exit_code == 3 and "gave up earlier" in again.stderr


def test_wait_and_reset_resumes_where_a_killed_run_stopped(db, cli, frozen, acme):
    status = finished(jira_dev_status__embedding="running")
    status.update(reset_stage="check", reset_attempt=3, reset_deadline=(START + timedelta(seconds=100)).isoformat())
    job = db.job("Jira", acme, status=status)
    result = cli("wait-and-reset", job)
    assert result.exit_code == 3
    assert frozen.sleeps == [100, 300]  # check 4 at its deadline, then the last wait, then check 5 gives up


def test_wait_and_reset_of_a_job_that_is_not_finished_is_a_conflict(db, cli, frozen, acme):
    job = db.job("Jira", acme, status=running())
    result = cli("wait-and-reset", job)
    assert (result.exit_code, result.stderr) == (
        4, f"etlctl: job {job} (Jira, tenant acme) is RUNNING, not FINISHED: nothing to wait for\n")
    assert frozen.sleeps == []


def test_wait_and_reset_dry_run_shows_the_next_step_only(db, cli, frozen, acme):
    job = db.job("Jira", acme, status=finished(), last_run_finished_at=START.replace(tzinfo=None))
    result = cli("wait-and-reset", job, "--dry-run")
    assert result.exit_code == 0
    assert result.stdout == f"job {job} (Jira, tenant acme): next: schedule at 2026-11-28 15:00:30 (in 30s): first check scheduled\n"
    assert frozen.sleeps == [] and db.audit(job) == []


# --- sweep ---------------------------------------------------------------------------


def test_sweep_advances_the_same_state_machine_one_pass_at_a_time(db, cli, frozen, acme):
    job = db.job("Jira", acme, status=finished(jira_dev_status__embedding="running"),
                 last_run_finished_at=START.replace(tzinfo=None), schedule_interval_minutes=30)

    first = cli("sweep")
    assert first.exit_code == 0
    assert first.stdout == (
        "    JOB  NAME                     ACTION    DETAIL\n"
        f"{job:>7}  Jira                     schedule  first check at 15:00:30 (in 30s)\n")
    assert (cli("sweep").stdout, cli("sweep").stderr) == ("", "")  # nothing due yet: silent

    frozen.frozen.tick(30)
    second = cli("sweep")
    assert second.stdout.splitlines()[1] == (
        f"{job:>7}  Jira                     retry     check 1 of 5 not finished: jira_dev_status.embedding: "
        "still running; next check at 15:01:00 (in 30s)")

    db.sql("UPDATE etl_jobs SET status = jsonb_set(status, '{steps,jira_dev_status,embedding}', '\"finished\"')")
    frozen.frozen.tick(30)
    third = cli("sweep")
    assert "cooldown  check 2 of 5: all steps finished; reset at 15:01:30 (in 30s)" in third.stdout
    frozen.frozen.tick(30)
    fourth = cli("sweep", "--json")
    assert [(r["job_id"], r["action"], r["applied"]) for r in fourth.json()] == [(job, "reset", True)]
    assert db.status(job)["overall"] == "READY"
    assert cli("sweep", "--json").json() == []


def test_sweep_dry_run_changes_nothing(db, cli, frozen, acme):
    job = db.job("Jira", acme, status=finished(), last_run_finished_at=(START - timedelta(hours=1)).replace(tzinfo=None))
    before = db.row(job)
    result = cli("sweep", "--dry-run")
    assert "cooldown?" in result.stdout
    assert db.row(job) == before and db.audit(job) == []


def test_sweep_reports_a_malformed_reset_state_every_time_and_carries_on(db, cli, frozen, acme):
    job = db.job("Jira", acme, status={**finished(), "reset_deadline": "soon", "reset_stage": "check"})
    plain = cli("sweep")
    assert (plain.exit_code, plain.stdout) == (0, (
        "    JOB  NAME                     ACTION    DETAIL\n"
        f"{job:>7}  Jira                     malformed malformed reset state: reset_deadline 'soon' is not an ISO time with offset\n"))
    records = cli("sweep", "--json").json()
    assert records == [{"job_id": job, "job_name": "Jira", "tenant_id": acme, "action": "malformed", "applied": False,
                        "detail": "malformed reset state: reset_deadline 'soon' is not an ISO time with offset",
                        "deadline": None}]
    assert db.status(job)["reset_deadline"] == "soon"  # never repaired


@pytest.mark.parametrize("sweep_at", [0.5, 1.0])
def test_a_sweep_during_the_waits_of_wait_and_reset_still_resets_once(db, cli, frozen, acme, sweep_at):
    """Interleave deterministically: a sweep runs inside each of wait-and-reset's sleeps.

    At 0.5 the sweep finds nothing due yet; at 1.0 it runs once the deadline has
    passed, so it takes each step first and wait-and-reset must notice.
    """
    job = db.job("Jira", acme, status=finished(), last_run_finished_at=START.replace(tzinfo=None))
    original = frozen.sleep

    def sleep_with_a_sweep(seconds):
        original(seconds * sweep_at)
        assert cli("sweep").exit_code == 0
        original(seconds * (1 - sweep_at))

    frozen.sleep = sleep_with_a_sweep
    result = cli("wait-and-reset", job)
    assert result.exit_code == 0, result.stderr
    resets = [a for a in db.audit(job) if a["to_state"] == "READY"]
    assert len(resets) == 1
    assert db.status(job)["overall"] == "READY"
    if sweep_at == 1.0:
        assert resets[0]["command"] == "sweep"
        assert result.stdout == f"job {job} (Jira, tenant acme) was reset or restarted by someone else: it is READY now\n"
    else:
        assert resets[0]["command"] == "wait-and-reset"
