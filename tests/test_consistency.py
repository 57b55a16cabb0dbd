"""One meaning per option across commands: --limit (at most N rows shown or acted on,
with a maximum), --tenant (only that tenant's jobs; an unknown one exits 5)."""

from __future__ import annotations

import pytest

from tests.helpers import Cli

LIMITED = [["status"], ["history", "1"], ["queue", "ls"], ["schedule-next"]]


@pytest.mark.parametrize("command", LIMITED)
def test_a_limit_above_the_maximum_is_one_line_exit_2(command):
    result = Cli("dbname=never_reached")(*command, "--limit", "99999999999999999999")
    assert (result.exit_code, result.stderr) == (
        2, "etlctl: error: Invalid value for '--limit': 99999999999999999999 is not in the range 1<=x<=1000000. "
           f"(see `etlctl {' '.join(command[:2] if command[0] == 'queue' else command[:1])} --help`)\n")


@pytest.mark.parametrize(("command", "counted"), [
    (["status"], "At most N jobs listed without JOB"),
    (["history"], "At most N changes shown, the newest"),
    (["queue", "ls"], "At most N messages shown, the newest"),
    (["schedule-next"], "At most N jobs started in this tick"),
])
def test_each_help_says_what_its_limit_counts(command, counted):
    text = " ".join(Cli(None)(*command, "--help").stdout.split())
    assert f"--limit N {counted}" in text and "1<=x<=1000000" in text


def test_every_listing_says_when_it_shows_fewer_than_there_are(db, cli):
    job = db.job("Jira", status={"overall": "READY", "steps": {}})
    db.job("Jira", status={"overall": "READY", "steps": {}})
    for n in range(3):
        db.sql("INSERT INTO etlctl.queue (job_id, tenant_id, token, step, phase, message) "
               "SELECT id, tenant_id, %s, 's', 'extraction', '{}' FROM etl_jobs WHERE id = %s", f"t{n}", job)
        db.sql("INSERT INTO etlctl.audit (job_id, command, host, pid) VALUES (%s, 'step', 'vm', 1)", job)
    status = cli("status", "--limit", "1")
    assert status.stderr == "showing the first 1 jobs; there are more (use --limit or --tenant)\n"
    queue = cli("queue", "ls", "--limit", "2", "--json")
    assert [row["token"] for row in queue.json()] == ["t1", "t2"]
    assert queue.stderr == "showing the newest 2 messages; there are more (use --limit)\n"
    history = cli("history", job, "--limit", "2")
    assert history.stderr == "showing the newest 2 of 3 changes (use --limit or --since)\n"
    assert cli("queue", "ls", "--limit", "3").stderr == ""
