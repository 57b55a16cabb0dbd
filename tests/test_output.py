"""Long waits and cron logs: -q (only errors), --log-timestamps (every line starts with the
time), and wait-and-reset's live "next check in ..." on a terminal, driven by frozen time."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest

from etlctl.core import lifecycle
from etlctl.views.flow import WaitPrinter
from tests.helpers import Cli, finished, run_process, running

STAMP = "2026-11-28T15:00:00+00:00"


@pytest.fixture(autouse=True)
def utc_host(monkeypatch):
    """Timestamps are in this host's zone: pin it, so that the expected lines hold on any machine."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_quiet_silences_notes_never_the_data_asked_for(db, cli, acme, frozen):
    job = db.job("Jira", acme, status=running())
    for quiet in (["-q"], ["--quiet"]):
        done = cli(*quiet, "status", job, "--json")
        assert (done.exit_code, done.stderr) == (0, "")
        assert done.json()["id"] == job
    reset = cli("reset", job, "--force", "-q")  # after the command too, like -v; its warning is a note
    assert (reset.exit_code, reset.stdout) == (
        0, f"reset job {job} (Jira, tenant acme) to READY; next run at 2026-11-28 21:00:00 (in 6h)\n")
    assert reset.stderr == ""
    assert db.status(job)["overall"] == "READY"
    db.job("GitHub", acme)
    listed = cli("-q", "status", "--limit", "1")
    assert (listed.exit_code, listed.stderr, len(listed.stdout.splitlines())) == (0, "", 3)  # "first 1 jobs": a note
    missing = cli("reset", "999", "-q")
    assert (missing.exit_code, missing.stdout, missing.stderr) == (5, "", "etlctl: no job 999\n")


def test_quiet_keeps_the_reason_of_a_non_zero_exit(db, cli, acme):
    nothing = cli("-q", "queue", "claim", "--worker", "w1")
    assert (nothing.exit_code, nothing.stdout, nothing.stderr) == (3, "", "etlctl: no unclaimed extraction message\n")


def test_quiet_keeps_the_error_line_and_drops_the_rest(db, cli, acme, frozen):
    job = db.job("Jira", acme, status=finished(jira_dev_status__embedding="running"),
                 last_run_finished_at=frozen.sql_now().replace(tzinfo=None))
    result = cli("-q", "wait-and-reset", job, "--backoff", "10")
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr == (f"etlctl: job {job} (Jira, tenant acme): gave up after 2 checks: "
                             "jira_dev_status.embedding: still running\n")


def test_log_timestamps_start_every_line_on_both_streams(db, cli, acme, frozen):
    job = db.job("Jira", acme, status=running(), schedule_interval_minutes=60)
    assert cli("complete", job).exit_code == 0
    result = cli("wait-and-reset", job, env={"ETLCTL_LOG_TIMESTAMPS": "1"})
    assert result.exit_code == 0, result.stderr
    # Time moves on through the clock seam while it waits: each line carries its own moment.
    assert result.stderr == (
        f"{STAMP} job {job} (Jira, tenant acme): waiting for check 1 of 5 at 15:00:30 (in 30s)\n"
        f"2026-11-28T15:00:30+00:00 job {job} (Jira, tenant acme): check 1 of 5: all steps finished\n"
        "2026-11-28T15:00:30+00:00 Job completed. Resetting in 30 seconds...\n"
        "2026-11-28T15:00:40+00:00 Job completed. Resetting in 20 seconds...\n"
        "2026-11-28T15:00:50+00:00 Job completed. Resetting in 10 seconds...\n"
    )
    assert result.stdout == (f"2026-11-28T15:01:00+00:00 reset job {job} (Jira, tenant acme) to READY; "
                             "next run at 2026-11-28 16:01:00 (in 1h)\n")


def test_log_timestamps_mark_each_line_of_a_table_and_of_json_and_errors(db, cli, acme, frozen):
    db.job("Jira", acme)
    table = cli("--log-timestamps", "status")
    assert len(table.stdout.splitlines()) == 3
    assert all(line.startswith(STAMP + " ") for line in table.stdout.splitlines())
    as_json = cli("status", "--json", "--log-timestamps")
    assert all(line.startswith(STAMP + " ") for line in as_json.stdout.splitlines())
    missing = cli("status", "999", env={"ETLCTL_LOG_TIMESTAMPS": "1"})
    assert (missing.exit_code, missing.stderr) == (5, f"{STAMP} etlctl: no job 999\n")


def test_without_the_flag_no_line_has_a_timestamp_not_even_in_a_file(db, cli, acme, frozen):
    db.job("Jira", acme)
    assert not cli("status").stdout.startswith("2026")


def test_quiet_and_timestamps_silence_the_embedded_server_note_too(embedded_home):
    """Every line of a run obeys them, even one written below the views (the embedded server's note)."""
    env = {"ETLCTL_HOME": str(embedded_home)}
    assert run_process(["db", "init"], None, env).exit_code == 0
    noted = run_process(["status"], None, env)  # a process of its own: the note comes once per process
    assert noted.stderr.startswith("etlctl: using the embedded PostgreSQL server")
    quiet = run_process(["-q", "status"], None, env)
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    stamped = run_process(["status"], None, {**env, "ETLCTL_LOG_TIMESTAMPS": "1"})
    assert stamped.stderr.splitlines()[0][:4].isdigit()
    assert " etlctl: using the embedded PostgreSQL server" in stamped.stderr.splitlines()[0]


# --- the live wait between checks ------------------------------------------------------


class Job:
    def label(self) -> str:
        return "job 7 (Jira, tenant acme)"


def wait_decision(attempt: int, stage: str = lifecycle.CHECK) -> lifecycle.Decision:
    state = lifecycle.ResetState(stage, None, attempt)
    return lifecycle.Decision(lifecycle.WAIT, state, "check", attempt=attempt, stage=stage)


def test_on_a_terminal_the_wait_between_checks_counts_down_each_second(frozen):
    screen = Terminal()
    WaitPrinter(checks=5, stream=screen).waiting(Job(), wait_decision(1), 160, frozen.sleep)
    assert frozen.sleeps == [1.0] * 160  # through the clock seam: frozen time moved 160 s
    frames = screen.getvalue().split("\r\033[K")
    assert frames[1:4] == ["next check in 2m40s (attempt 2 of 5)", "next check in 2m39s (attempt 2 of 5)",
                           "next check in 2m38s (attempt 2 of 5)"]
    assert frames[-2] == "next check in 1s (attempt 2 of 5)" and frames[-1] == ""  # erased at the end


def test_elsewhere_the_wait_between_checks_is_one_sleep_and_no_line(frozen):
    log = io.StringIO()
    WaitPrinter(checks=5, stream=log).waiting(Job(), wait_decision(3), 180, frozen.sleep)
    assert (frozen.sleeps, log.getvalue()) == ([180], "")


def test_on_a_terminal_the_cool_down_counts_down_each_second_too(frozen):
    screen = Terminal()
    WaitPrinter(checks=5, stream=screen).waiting(Job(), wait_decision(0, lifecycle.COOLDOWN), 3, frozen.sleep)
    assert screen.getvalue().split("\r\033[K") == [
        "", "Job completed. Resetting in 3 seconds...", "Job completed. Resetting in 2 seconds...",
        "Job completed. Resetting in 1 second...", ""]


@pytest.mark.parametrize("flags", [["--log-timestamps"], ["-q"]])
def test_a_terminal_gets_no_live_line_with_timestamps_or_quiet(db, acme, frozen, monkeypatch, flags):
    """A live line redrawn in place cannot carry a timestamp; a quiet run draws nothing."""
    from etlctl.views import output

    monkeypatch.setattr(output.Lines, "isatty", lambda self: True)
    job = db.job("Jira", acme, status=finished(), last_run_finished_at=(frozen.sql_now() - timedelta(minutes=5))
                 .replace(tzinfo=None))
    result = Cli(db.dsn)(*flags, "wait-and-reset", job, "--cooldown", "3")
    assert result.exit_code == 0
    assert "\r" not in result.stderr and "\033[K" not in result.stderr
