"""Run tokens a person can paste back: the whole token, or a prefix of at least 8
characters that no other run of the job shares (as git takes hash prefixes). The
write's own guard decides; a refusal never prints the current token."""

from __future__ import annotations

import pytest

from tests.helpers import JIRA_STEPS, running

TOKEN = "6f1c0a2e-9b1d-4c3e-8f5a-2d7e4b6c9a10"
OLD_TOKEN = "6f1c0a2e-0000-4000-8000-000000000000"  # an earlier run that starts the same way


@pytest.fixture
def job(db):
    return db.job("Jira", status=running(JIRA_STEPS, "finished", token=TOKEN, jira_dev_status__embedding="running"))


def earlier_run(db, job_id: int, token: str) -> None:
    """An audit row of an earlier run of the job, as schedule-next writes when it starts one."""
    db.sql("INSERT INTO etlctl.audit (job_id, from_state, to_state, token, command, host, pid) "
           "VALUES (%s, 'READY', 'RUNNING', %s, 'schedule-next', 'vm', 1)", job_id, token)


@pytest.mark.parametrize("given", [TOKEN[:8], TOKEN[:13], TOKEN])
def test_a_prefix_of_at_least_8_characters_names_the_current_run(db, cli, job, given):
    step = cli("step", job, "jira_dev_status", "embedding", "finished", "--token", given)
    assert (step.exit_code, step.stdout) == (0, f"job {job}: set jira_dev_status.embedding running -> finished\n")
    done = cli("complete", job, "--token", given)
    assert done.exit_code == 0 and done.stdout.startswith(f"marked job {job} FINISHED (run {TOKEN}); ")
    # The audit keeps the whole token, whatever was typed.
    assert [a["token"] for a in db.audit(job)] == [TOKEN, TOKEN]


@pytest.mark.parametrize("command", [["complete"], ["step", "jira_dev_status", "embedding", "finished"]])
def test_a_shorter_prefix_is_a_usage_error_and_changes_nothing(db, cli, job, command):
    before = db.row(job)
    result = cli(command[0], job, *command[1:], "--token", TOKEN[:7])
    assert (result.exit_code, result.stderr) == (
        2, f"etlctl: invalid --token '6f1c0a2': give job {job}'s whole run token, or at least its first 8 characters "
           f"(`etlctl status {job}` shows it)\n")
    assert db.row(job) == before and db.audit(job) == []


@pytest.mark.parametrize("command", [["complete"], ["step", "jira_dev_status", "embedding", "finished"]])
def test_a_stale_token_exits_4_without_showing_the_current_one(db, cli, job, command):
    before = db.row(job)
    result = cli(command[0], job, *command[1:], "--token", "0d3c9e1f")
    assert (result.exit_code, result.stderr) == (
        4, f"etlctl: job {job}: token '0d3c9e1f' is not its current run; nothing changed "
           f"(`etlctl status {job}` shows the current run's token)\n")
    assert TOKEN[:8] not in result.stdout + result.stderr
    assert db.row(job) == before and db.audit(job) == []


def test_a_prefix_another_run_shares_is_ambiguous_and_more_characters_settle_it(db, cli, job):
    earlier_run(db, job, OLD_TOKEN)
    before = db.row(job)
    result = cli("step", job, "jira_dev_status", "embedding", "finished", "--token", TOKEN[:8])
    assert (result.exit_code, result.stderr) == (
        2, f"etlctl: --token '6f1c0a2e' is the start of more than one run of job {job}: give more of its characters\n")
    assert db.row(job) == before
    assert cli("step", job, "jira_dev_status", "embedding", "finished", "--token", TOKEN[:10]).exit_code == 0


def test_the_prefix_of_an_earlier_run_never_matches_the_current_one(db, cli, job):
    """The stale-run guard holds for prefixes: an earlier run's prefix is stale, even one that is also
    the start of the current token (it is ambiguous then, never accepted)."""
    earlier_run(db, job, OLD_TOKEN)
    assert cli("complete", job, "--token", OLD_TOKEN[:14]).exit_code == 4
    assert cli("complete", job, "--token", OLD_TOKEN[:8]).exit_code == 2
    assert db.status(job)["overall"] == "RUNNING"


def test_a_prefix_is_matched_as_text_never_as_a_pattern(db, cli):
    job = db.job("Jira", status=running(JIRA_STEPS, token="run_2026%x-1"))
    assert cli("complete", job, "--token", "run%2026").exit_code == 4
    assert cli("complete", job, "--token", "run_2026").exit_code == 0


def test_history_shows_the_8_characters_that_commands_accept(db, cli, job):
    assert cli("step", job, "jira_dev_status", "embedding", "finished", "--token", TOKEN[:8]).exit_code == 0
    shown = cli("history", job).stdout.splitlines()[2].split()
    assert TOKEN[:8] in shown and TOKEN not in shown
