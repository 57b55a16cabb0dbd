"""One test per row of the tables of existing-system-contract.md: the steps of the seeded
jobs (§3), the first message of a run (§2) and what each write leaves (§5), on rows built
the way the existing seeds build them (tests/fixtures/existing_seeds.sql), in New York time.

The expected values are written here from the contract's text, never computed by etlctl.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.helpers import GITHUB_STEPS, JIRA5_STEPS, NEW_YORK, PHASES, Cli

NOW = datetime(2026, 11, 28, 15, 0, 0, tzinfo=timezone.utc)  # 10:00 in New York
FROZEN_AT = NOW
NY_NOW = "2026-11-28 10:00:00"


@pytest.fixture
def ny(db):
    return Cli(db.dsn, env=NEW_YORK)


IDLE = {"extraction": "idle", "transform": "idle", "embedding": "idle"}


def ok(result):
    assert result.exit_code == 0, result.stderr
    return result


def every_phase(names, value):
    return {name: {p: value for p in PHASES} for name in names}


# --- §3: the steps of the seeded jobs --------------------------------------------------------------

STEPS_TABLE = [  # job, order, step, display name: the contract's table, row by row
    ("Jira", 1, "jira_projects_and_issue_types", "Projects & Types"),
    ("Jira", 2, "jira_statuses_and_relationships", "Statuses & Relations"),
    ("Jira", 3, "jira_issues_with_changelogs", "Issues & Changelogs"),
    ("Jira", 4, "jira_dev_status", "Development Status"),
    ("Jira", 5, "jira_sprint_reports", "Sprint Reports"),
    ("GitHub", 1, "github_repositories", "Repositories"),
    ("GitHub", 2, "github_prs_commits_reviews_comments", "PRs, Commits, Reviews & Comments"),
    ("WEX Fabric", 1, "wex_fabric_data", "Fabric Data"),
    ("WEX AD", 1, "wex_ad_users", "AD Users"),
]


@pytest.mark.parametrize("job_name, order, step, display_name", STEPS_TABLE, ids=[r[2] for r in STEPS_TABLE])
def test_steps_of_the_seeded_jobs(db, ny, seeded, frozen, job_name, order, step, display_name):
    kinds = {k["kind"]: k for k in ok(ny("kinds", "--json")).json()}
    listed = [(s["position"], s["step"], s["display_name"]) for s in kinds[job_name.lower()]["steps"]]
    assert (order, step, display_name) in listed
    assert len(listed) == sum(1 for r in STEPS_TABLE if r[0] == job_name)

    job = seeded[("acme", job_name)]
    db.sql("UPDATE etl_jobs SET status = %s, active = true WHERE id = %s",
           Jsonb({"overall": "RUNNING", "token": "t", "steps": {}}), job)
    # `step` accepts the kind's step even when the document does not have it yet, and writes that phase alone.
    ok(ny("step", job, step, "extraction", "running"))
    assert db.status(job)["steps"][step] == {"extraction": "running"}
    if job_name in ("Jira", "GitHub"):
        # A new run gets the kind's steps, in its order and with its display names.
        ok(ny("reset", job, "--force"))
        db.sql("UPDATE etl_jobs SET status = status - 'steps', next_run = NULL WHERE id = %s", job)
        assert job in [r["job_id"] for r in ok(ny("schedule-next", "--json")).json()["started"]]
        assert db.status(job)["steps"][step] == {"order": order, "display_name": display_name,
                                                 **{p: "idle" for p in PHASES}}


def test_an_older_four_step_jira_document_is_judged_on_its_own_steps(db, ny, seeded, frozen):
    job = seeded[("acme", "Jira")]
    db.set_status(job, {"overall": "FINISHED", "token": "t", "steps": every_phase(JIRA5_STEPS[:4], "finished")})
    assert ok(ny("check", job, "--json")).json()["all_finished"] is True
    # A fifth step present and still running is judged: the job is not finished.
    db.set_status(job, {"overall": "FINISHED", "token": "t", "steps": {**every_phase(JIRA5_STEPS[:4], "finished"),
                                                                       "jira_sprint_reports": {"extraction": "finished",
                                                                                               "transform": "running"}}})
    result = ny("check", job, "--json")
    assert (result.exit_code, result.json()["reasons"]) == (3, ["jira_sprint_reports.transform: still running"])


# --- §2: the first message of a run ----------------------------------------------------------------


def start(db, ny, job) -> dict:
    started = {r["job_id"]: r for r in ok(ny("schedule-next", "--json")).json()["started"]}
    assert job in started
    [queued] = db.sql("SELECT queue_name, message FROM etlctl.queue WHERE id = %s", started[job]["queue_id"])
    token = db.status(job)["token"]
    assert uuid.UUID(token).version == 4  # the run's uuid4
    return {**queued, "token": token}


def test_first_message_of_a_jira_run(db, ny, seeded, frozen):
    job = seeded[("acme", "Jira")]
    row = db.row(job)
    queued = start(db, ny, job)
    assert queued["message"] == {
        "tenant_id": row["tenant_id"], "integration_id": row["integration_id"], "job_id": job,
        "type": "jira_projects_and_issue_types", "provider": "jira",
        "token": queued["token"], "old_last_sync_date": "2026-11-28 09:15:00",  # the stored naive value, as is
    }
    assert queued["queue_name"] == "extraction_queue_premium"


def test_first_message_of_a_github_run(db, ny, seeded, frozen):
    job = seeded[("globex", "GitHub")]
    row = db.row(job)
    queued = start(db, ny, job)
    assert queued["message"] == {
        "tenant_id": row["tenant_id"], "integration_id": row["integration_id"], "job_id": job,
        "type": "github_repositories", "provider": "github", "first_item": True, "last_item": False,
        "token": queued["token"], "old_last_sync_date": None,  # never synced: null
    }
    assert queued["queue_name"] == "extraction_queue_basic"  # the tenant's tier


def test_old_last_sync_date_is_the_stored_value_whatever_the_zone(db, seeded, frozen):
    job = seeded[("acme", "Jira")]
    db.sql("UPDATE etl_jobs SET last_sync_date = '2026-07-04 23:59:59.75' WHERE id = %s", job)
    queued = start(db, Cli(db.dsn, env={"ETLCTL_DB_TIMEZONE": "Asia/Tokyo"}), job)
    assert queued["message"]["old_last_sync_date"] == "2026-07-04 23:59:59"


def test_nothing_but_the_first_step_is_queued_for_the_seeded_kinds(db, ny, seeded, frozen):
    jira, github = seeded[("acme", "Jira")], seeded[("acme", "GitHub")]
    started = [r["job_id"] for r in ok(ny("schedule-next", "--json")).json()["started"]]
    assert jira in started and github in started
    for job, first in ((jira, JIRA5_STEPS[0]), (github, GITHUB_STEPS[0])):
        token = db.status(job)["token"]
        for phase in PHASES:
            ok(ny("step", job, first, phase, "finished", "--token", token))
    frozen.frozen.tick(3600)
    assert ok(ny("schedule-next", "--json")).json()["queued_next_steps"] == []
    assert db.value("SELECT count(*) FROM etlctl.queue WHERE job_id IN (%s, %s)", jira, github) == 2


def test_wex_jobs_are_never_started(db, ny, seeded, frozen):
    fabric, ad = seeded[("acme", "WEX Fabric")], seeded[("acme", "WEX AD")]
    db.sql("UPDATE etl_jobs SET active = true WHERE id IN (%s, %s)", fabric, ad)
    plan = ok(ny("schedule-next", "--explain", "--json")).json()
    assert {r["job_id"] for r in plan["started"]}.isdisjoint({fabric, ad})
    reasons = {r["job_id"]: r["reason"] for r in plan["not_started"]}
    assert reasons[fabric] == "kind wex fabric defines no message (no worker takes its runs): never started"
    assert reasons[ad] == "kind wex ad defines no message (no worker takes its runs): never started"
    assert f"  waiting  blocked: {reasons[fabric]}\n" in ok(ny("why", fabric)).stdout
    assert db.value("SELECT count(*) FROM etlctl.queue WHERE job_id IN (%s, %s)", fabric, ad) == 0


# --- §5: what each write leaves ------------------------------------------------------------------


def test_start(db, ny, seeded, frozen):
    job = seeded[("acme", "Jira")]
    db.sql("UPDATE etl_jobs SET error_message = 'earlier', status = status || '{\"reset_attempt\": 3}' WHERE id = %s", job)
    before = db.row(job)
    start(db, ny, job)
    row = db.row(job)
    assert (str(row["last_run_started_at"]), str(row["last_updated_at"]), row["error_message"]) == (NY_NOW, NY_NOW, None)
    status = row["status"]
    assert (status["overall"], status["reset_deadline"], status["reset_attempt"]) == ("RUNNING", None, 0)
    assert status["token"] != before["status"]["token"]
    assert isinstance(status["reset_attempt"], int)


def complete_a_run(db, ny, job, *args, meanwhile=None):
    token = start(db, ny, job)["token"]
    if meanwhile:
        db.sql(meanwhile, job)
    ok(ny("complete", job, "--token", token, *args))
    return token


def test_complete(db, ny, seeded, frozen):
    job = seeded[("acme", "Jira")]
    complete_a_run(db, ny, job, meanwhile="UPDATE etl_jobs SET retry_count = 4, error_message = 'x', "
                                          "next_run = '2026-11-29 00:00:00' WHERE id = %s")
    row = db.row(job)
    assert (str(row["last_run_finished_at"]), str(row["last_updated_at"])) == (NY_NOW, NY_NOW)
    assert (row["next_run"], row["error_message"], row["retry_count"]) == (None, None, 0)
    assert str(row["last_sync_date"]) == "2026-11-28 09:15:00"  # no --sync-date: unchanged
    status = row["status"]
    assert (status["overall"], status["reset_attempt"]) == ("FINISHED", 0)
    deadline = datetime.fromisoformat(status["reset_deadline"])  # ISO 8601 with an offset
    assert deadline.utcoffset() == timedelta(hours=-5) and deadline == NOW + timedelta(seconds=30)


def test_complete_with_a_sync_date(db, ny, seeded, frozen):
    job = seeded[("acme", "GitHub")]
    complete_a_run(db, ny, job, "--sync-date", "2026-11-28T09:59:00-05:00")
    assert str(db.row(job)["last_sync_date"]) == "2026-11-28 09:59:00"


def test_extend_the_deadline(db, ny, seeded, frozen):
    """The real reset scheduler extends by 60, 180, then 300 s: etlctl's --backoff says how long."""
    job = seeded[("acme", "Jira")]
    complete_a_run(db, ny, job)
    for attempt, wait in enumerate((60, 180, 300), 1):
        frozen.frozen.move_to(datetime.fromisoformat(db.status(job)["reset_deadline"]))
        ok(ny("sweep", env={"ETLCTL_BACKOFF": "60,180,300,300"}))
        row = db.row(job)
        now = frozen.sql_now()
        assert row["status"]["reset_attempt"] == attempt
        deadline = datetime.fromisoformat(row["status"]["reset_deadline"])
        assert deadline.utcoffset() == timedelta(hours=-5) and deadline == now + timedelta(seconds=wait)
        assert row["last_updated_at"] == now.astimezone(deadline.tzinfo).replace(tzinfo=None)


def test_reset(db, ny, seeded, frozen):
    job = seeded[("acme", "GitHub")]
    complete_a_run(db, ny, job)
    db.sql("UPDATE etl_jobs SET status = jsonb_set(status, '{steps}', %s) WHERE id = %s",
           Jsonb({name: {"order": n, **{p: "finished" for p in PHASES}} for n, name in enumerate(GITHUB_STEPS, 1)}), job)
    ok(ny("reset", job))
    row = db.row(job)
    assert str(row["next_run"]) == "2026-11-28 16:00:00"  # now + schedule_interval_minutes (360)
    assert str(row["last_updated_at"]) == NY_NOW
    status = row["status"]
    assert {k: status[k] for k in ("overall", "token", "reset_deadline", "reset_attempt")} == {
        "overall": "READY", "token": None, "reset_deadline": None, "reset_attempt": 0}
    assert isinstance(status["reset_attempt"], int)
    assert status["steps"] == {name: {"order": n, **{p: "idle" for p in PHASES}} for n, name in enumerate(GITHUB_STEPS, 1)}


def test_a_reset_never_writes_null_steps(db, ny, seeded, frozen):
    job = seeded[("acme", "Jira")]
    db.set_status(job, {"overall": "RUNNING", "token": "t"})
    ok(ny("reset", job, "--force"))
    status = db.status(job)
    assert "steps" not in status and status["overall"] == "READY" and status["reset_attempt"] == 0


@pytest.mark.parametrize("steps, written", [
    (None, {}),
    ("x", {}),
    ([1], {}),
    ({"pages": None, "issues": [1], "boards": {"order": 2, "transform": "running"}},
     {"pages": IDLE, "issues": IDLE, "boards": {"order": 2, **IDLE}}),
])
def test_a_forced_reset_of_steps_that_are_not_objects_writes_objects(db, ny, seeded, frozen, steps, written):
    """The existing UI reads steps, and each step, as objects: a READY row never carries anything else."""
    job = seeded[("acme", "Jira")]
    db.set_status(job, {"overall": "RUNNING", "token": "t", "steps": steps})
    ok(ny("reset", job, "--force"))
    status = db.status(job)
    assert status["steps"] == written and status["overall"] == "READY"


def test_a_workers_step_update(db, ny, seeded, frozen):
    """The worker's plain jsonb_set, no NOTIFY: etlctl judges what it wrote; etlctl's own `step` writes the same."""
    job = seeded[("acme", "Jira")]
    token = start(db, ny, job)["token"]
    with psycopg.connect(db.dsn, autocommit=True) as worker:
        worker.execute("UPDATE etl_jobs SET status = jsonb_set(status, %s, %s) WHERE id = %s",
                       (["steps", JIRA5_STEPS[2], "transform"], Jsonb("running"), job))
    steps = db.status(job)["steps"]
    assert steps[JIRA5_STEPS[2]]["transform"] == "running"
    ok(ny("complete", job, "--token", token))
    assert ny("check", job, "--json").json()["reasons"][0] == "jira_projects_and_issue_types: not started (all phases idle)"
    before = db.status(job)
    ok(ny("step", job, JIRA5_STEPS[2], "transform", "finished", "--token", token))
    after = db.status(job)
    before["steps"][JIRA5_STEPS[2]]["transform"] = "finished"
    assert after == before


def test_rate_limited(db, ny, seeded, frozen):
    """The workers' RATE_LIMITED spelling, read as RATE_LIMIT_REACHED (where no CHECK refuses it)."""
    job = seeded[("acme", "Jira")]
    with pytest.raises(psycopg.errors.CheckViolation):  # the table's CHECK refuses the spelling, as the contract says
        db.set_status(job, {"overall": "RATE_LIMITED"})
    db.sql("ALTER TABLE etl_jobs DROP CONSTRAINT etl_jobs_status_check")  # a database without that constraint
    db.sql("""UPDATE etl_jobs SET status = status || '{"overall": "RATE_LIMITED"}',
              next_run = '2026-11-28 10:15:00', error_message = NULL, retry_count = 0 WHERE id = %s""", job)
    assert ok(ny("status", job, "--json")).json()["overall"] == "RATE_LIMIT_REACHED"
    assert "  state    RATE_LIMIT_REACHED; next_run in 15m\n" in ok(ny("why", job)).stdout
    assert job not in [r["job_id"] for r in ok(ny("schedule-next", "--json")).json()["started"]]
    frozen.frozen.tick(15 * 60)
    assert job in [r["job_id"] for r in ok(ny("schedule-next", "--json")).json()["started"]]
    assert db.row(job)["retry_count"] == 0


def test_kinds_shows_whether_schedule_next_chains_each_step(db, cli):
    db.sql("UPDATE etlctl.kind_steps SET chain = true WHERE kind = 'github' AND position = 2")
    result = cli("kinds")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.splitlines()[:4] == [
        "KIND        #    STEP                                 DISPLAY NAME                      RULE              CHAIN",
        "----------  ---  -----------------------------------  --------------------------------  ----------------  -------",
        "github      1    github_repositories                  Repositories                      finished          no",
        "            2    github_prs_commits_reviews_comments  PRs, Commits, Reviews & Comments  finished_or_idle  yes",
    ]
    github = {k["kind"]: k for k in cli("kinds", "--json").json()}["github"]
    assert [s["chain"] for s in github["steps"]] == [False, True]
