"""complete, step, check and reset through the CLI, against a real database."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from tests.helpers import GITHUB_STEPS, JIRA_STEPS, PHASES, finished, running, steps


@pytest.fixture
def jira(db):
    """A Jira job of tenant 'acme' on its own integration, RUNNING run 'tok-1', every phase finished."""
    tenant = db.tenant("acme")
    integration = db.integration(tenant, "Jira")
    return db.job("Jira", tenant, integration, status=running(), last_run_started_at="2026-11-28 08:00:00",
                  last_sync_date="2026-11-20 07:00:00", next_run="2026-11-28 09:00:00", error_message="earlier",
                  retry_count=2)


# --- complete --------------------------------------------------------------


def test_complete_finishes_the_run_and_records_a_pending_reset(db, cli, jira):
    result = cli("complete", jira, "--token", "tok-1", "--json")
    assert result.exit_code == 0, result.stderr
    out = result.json()
    assert (out["result"], out["overall"], out["token"], out["dry_run"]) == ("completed", "FINISHED", "tok-1", False)
    row = db.row(jira)
    status = row["status"]
    assert (status["overall"], status["reset_stage"], status["reset_attempt"]) == ("FINISHED", "check", 0)
    now = db.value("SELECT now()::timestamp")
    assert abs((row["last_run_finished_at"] - now).total_seconds()) < 5
    # As the existing complete_etl_job(): last_sync_date only with --sync-date; next_run, error and retries cleared.
    assert str(row["last_sync_date"]) == "2026-11-20 07:00:00"
    assert (row["next_run"], row["error_message"], row["retry_count"]) == (None, None, 0)
    deadline = db.value("SELECT (status->>'reset_deadline')::timestamptz - now() FROM etl_jobs WHERE id = %s", jira)
    assert timedelta(seconds=25) < deadline <= timedelta(seconds=30)
    audit = db.audit(jira)
    assert [(a["from_state"], a["to_state"], a["token"], a["command"]) for a in audit] == [("RUNNING", "FINISHED", "tok-1", "complete")]


def test_complete_again_on_the_same_run_is_a_no_op(db, cli, jira):
    assert cli("complete", jira, "--token", "tok-1").exit_code == 0
    before = db.row(jira)
    again = cli("complete", jira, "--token", "tok-1")
    assert (again.exit_code, again.stdout) == (0, f"job {jira} is already FINISHED (run tok-1): nothing to do\n")
    assert db.row(jira) == before
    assert len(db.audit(jira)) == 1


def test_complete_with_a_stale_token_changes_nothing(db, cli, jira):
    before = db.row(jira)
    result = cli("complete", jira, "--token", "tok-0000")
    assert result.exit_code == 4
    assert result.stderr == (f"etlctl: job {jira}: token 'tok-0000' is not its current run; nothing changed "
                             f"(`etlctl status {jira}` shows the current run's token)\n")
    assert db.row(jira) == before and db.audit(jira) == []


def test_complete_from_ready_is_a_conflict(db, cli):
    job = db.job("Jira", status={"overall": "READY", "steps": {}})
    result = cli("complete", job)
    assert (result.exit_code, result.stderr) == (4, f"etlctl: job {job} is READY, not RUNNING; nothing changed\n")


def test_complete_sync_date_and_dry_run(db, cli, jira):
    dry = cli("complete", jira, "--sync-date", "2026-11-27T10:00:00-05:00", "--dry-run")
    assert dry.exit_code == 0 and dry.stdout.startswith(f"would mark job {jira} FINISHED")
    assert db.status(jira)["overall"] == "RUNNING" and db.audit(jira) == []
    assert cli("complete", jira, "--sync-date", "2026-11-27T10:00:00-05:00").exit_code == 0
    assert str(db.row(jira)["last_sync_date"]) == "2026-11-27 15:00:00"  # read and written in the db zone (UTC)


def test_complete_notifies_listeners(db, cli, jira):
    with psycopg.connect(db.dsn, autocommit=True) as listener:
        listener.execute("LISTEN etl_job_status")
        assert cli("complete", jira).exit_code == 0
        note = next(listener.notifies(timeout=5))
    import json

    assert json.loads(note.payload) == {"job_id": jira, "tenant_id": db.row(jira)["tenant_id"], "overall": "FINISHED"}


# --- step ------------------------------------------------------------------


def test_step_sets_one_phase_and_keeps_everything_else(db, cli, jira):
    db.set_status(jira, {**running(value="running"), "ui": {"x": 1}})
    db.sql("UPDATE etl_jobs SET status = jsonb_set(status, '{steps,jira_dev_status,note}', '\"keep\"') WHERE id = %s", jira)
    result = cli("step", jira, "jira_dev_status", "embedding", "finished", "--token", "tok-1")
    assert (result.exit_code, result.stdout) == (0, f"job {jira}: set jira_dev_status.embedding running -> finished\n")
    status = db.status(jira)
    assert status["steps"]["jira_dev_status"] == {"order": 4, "extraction": "running", "transform": "running",
                                                  "embedding": "finished", "note": "keep"}
    assert status["ui"] == {"x": 1}
    audit = db.audit(jira)[-1]
    assert audit["details"] == {"step": "jira_dev_status", "phase": "embedding", "from": "running", "to": "finished"}


def test_step_creates_a_kind_step_missing_from_the_document(db, cli):
    job = db.job("Jira", status={"overall": "RUNNING", "token": "t", "steps": {}})
    assert cli("step", job, "jira_dev_status", "extraction", "running").exit_code == 0
    assert db.status(job)["steps"] == {"jira_dev_status": {"extraction": "running"}}


def test_step_already_in_that_state_is_a_no_op(db, cli, jira):
    result = cli("step", jira, "jira_dev_status", "embedding", "finished")
    assert (result.exit_code, result.stdout) == (0, f"job {jira}: jira_dev_status.embedding is already finished\n")
    assert db.audit(jira) == []


@pytest.mark.parametrize("name", ["nope", "x'; DROP TABLE etl_jobs; --", 'quo"te', "jira_dev_status ", ""])
def test_step_unknown_to_the_kind_is_a_usage_error(db, cli, jira, name):
    before = db.row(jira)
    result = cli("step", jira, name, "embedding", "finished")
    assert result.exit_code == 2
    assert result.stderr == (f"etlctl: unknown step {name!r}: not in job {jira}'s document, nor in kind jira "
                             f"({', '.join(JIRA_STEPS)}, jira_sprint_reports)\n")
    assert db.row(jira) == before
    assert db.value("SELECT count(*) FROM etl_jobs") == 1


def test_step_on_a_job_of_unknown_kind_accepts_only_its_own_steps(db, cli):
    job = db.job("Confluence", status={"overall": "RUNNING", "steps": {"pages": {"extraction": "idle"}}})
    assert cli("step", job, "pages", "extraction", "running").exit_code == 0
    result = cli("step", job, "other", "extraction", "running")
    assert result.exit_code == 2
    assert result.stderr == f"etlctl: unknown step 'other': job {job} has no kind and its document has no such step\n"


@pytest.mark.parametrize(("args", "message"), [
    (["jira_dev_status", "cleanup", "finished"], "Invalid value for 'PHASE'"),
    (["jira_dev_status", "embedding", "done"], "Invalid value for 'STATUS'"),
])
def test_step_bad_phase_or_status_is_one_line_exit_2(cli, jira, args, message):
    result = cli("step", jira, *args)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_step_with_a_stale_token_or_on_a_ready_job_changes_nothing(db, cli, jira):
    stale = cli("step", jira, "jira_dev_status", "embedding", "running", "--token", "old-token")
    assert stale.exit_code == 4 and "not its current run" in stale.stderr
    ready = db.job("Jira", status={"overall": "READY", "steps": steps(JIRA_STEPS, "idle")})
    before = db.row(ready)
    late = cli("step", ready, "jira_dev_status", "embedding", "running")
    assert (late.exit_code, late.stderr) == (4, f"etlctl: job {ready} is READY: no run to update; nothing changed\n")
    assert db.row(ready) == before


def test_step_refuses_to_repair_a_malformed_document(db, cli):
    job = db.job("Jira", status={"overall": "RUNNING", "steps": "corrupted"})
    result = cli("step", job, "jira_dev_status", "embedding", "running")
    assert result.exit_code == 4
    assert result.stderr == f"etlctl: job {job}: its status document's steps is string, not an object; nothing changed\n"
    assert db.status(job)["steps"] == "corrupted"


# --- check -----------------------------------------------------------------


def test_check_a_finished_job(db, cli):
    job = db.job("Jira", db.tenant("acme"), status=finished())
    result = cli("check", job)
    assert result.exit_code == 0
    assert result.stdout == (
        "#    STEP                             EXTRACTION    TRANSFORM    EMBEDDING    VERDICT\n"
        "---  -------------------------------  ------------  -----------  -----------  ---------\n"
        "1    jira_projects_and_issue_types    finished      finished     finished     finished\n"
        "2    jira_statuses_and_relationships  finished      finished     finished     finished\n"
        "3    jira_issues_with_changelogs      finished      finished     finished     finished\n"
        "4    jira_dev_status                  finished      finished     finished     finished\n"
        # The kind's fifth step, absent from this older document: shown, not judged.
        "5    jira_sprint_reports              -             -            -            absent\n"
        f"job {job} (Jira, tenant acme): all steps finished\n"
    )


def test_check_json_has_the_flow_documents_shape(db, cli):
    job = db.job("GitHub", status=finished(GITHUB_STEPS, github_prs_commits_reviews_comments__extraction="idle",
                                           github_prs_commits_reviews_comments__transform="idle",
                                           github_prs_commits_reviews_comments__embedding="idle"))
    result = cli("check", job, "--json")
    assert result.exit_code == 0
    out = result.json()
    assert out["all_finished"] is True and out["overall"] == "FINISHED" and out["reasons"] == []
    assert out["steps_status"] == {
        "github_repositories": {"extraction": "finished", "transform": "finished", "embedding": "finished"},
        "github_prs_commits_reviews_comments": {"extraction": "idle", "transform": "idle", "embedding": "idle"},
    }


def test_check_not_finished_exits_3_and_names_the_phase(db, cli):
    job = db.job("Jira", status=finished(jira_dev_status__embedding="running"))
    result = cli("check", job, "--json")
    assert result.exit_code == 3
    assert result.json()["reasons"] == ["jira_dev_status.embedding: still running"]
    assert result.stderr.endswith("not finished: jira_dev_status.embedding: still running\n")


def test_check_a_running_job_is_not_finished(db, cli):
    job = db.job("Jira", status=running())
    result = cli("check", job, "--json")
    assert result.exit_code == 3
    assert result.json()["all_finished"] is False
    assert result.json()["reasons"] == ["overall is 'RUNNING', not FINISHED"]


# --- reset -----------------------------------------------------------------


def test_reset_a_finished_job(db, cli):
    tenant = db.tenant("acme")
    job = db.job("Jira", tenant, status={**finished(), "reset_stage": "cooldown", "ui": True},
                 schedule_interval_minutes=120, error_message="old")
    result = cli("reset", job, "--json")
    assert result.exit_code == 0, result.stderr
    out = result.json()
    assert (out["success"], out["overall"], out["forced"]) == (True, "READY", False)
    assert out["steps"]["jira_dev_status"] == {"order": 4, "extraction": "idle", "transform": "idle", "embedding": "idle"}
    row = db.row(job)
    assert row["status"]["ui"] is True and row["status"]["token"] is None and row["status"]["reset_stage"] is None
    assert row["error_message"] is None
    in_two_hours = db.value("SELECT now()::timestamp + interval '2 hours'")
    assert abs((row["next_run"] - in_two_hours).total_seconds()) < 5
    assert [(a["from_state"], a["to_state"], a["token"]) for a in db.audit(job)] == [("FINISHED", "READY", "tok-1")]


def test_reset_refuses_an_unfinished_job(db, cli):
    job = db.job("Jira", status=finished(jira_issues_with_changelogs__transform="failed"))
    before = db.row(job)
    result = cli("reset", job)
    assert result.exit_code == 4
    assert result.stderr.endswith("is not finished: jira_issues_with_changelogs.transform: failed; not reset (--force overrides)\n")
    assert db.row(job) == before


def test_reset_refuses_a_job_that_is_not_finished(db, cli):
    job = db.job("Jira", status=running())
    result = cli("reset", job)
    assert result.exit_code == 4 and "is RUNNING, not FINISHED: nothing to reset (--force overrides)" in result.stderr


def test_reset_force_overrides_and_says_what(db, cli):
    job = db.job("Jira", status=running(jira_dev_status__embedding="running"))
    result = cli("reset", job, "--force")
    assert result.exit_code == 0, result.stderr
    assert "warning: forced reset" in result.stderr
    assert "overrode: overall was RUNNING; jira_dev_status.embedding: still running" in result.stderr
    assert db.status(job)["overall"] == "READY"
    audit = db.audit(job)[-1]
    assert audit["details"]["force"] is True
    assert audit["details"]["overridden"] == ["overall was RUNNING", "jira_dev_status.embedding: still running"]
    assert (audit["from_state"], audit["to_state"]) == ("RUNNING", "READY")


def test_reset_dry_run_changes_nothing(db, cli):
    job = db.job("Jira", status=finished())
    before = db.row(job)
    result = cli("reset", job, "--dry-run")
    assert result.exit_code == 0 and result.stdout.startswith("would reset job")
    assert db.row(job) == before and db.audit(job) == []


def test_a_reset_guarded_on_an_old_run_changes_nothing(db):
    """The check passed on run tok-1, then the job was restarted: the guarded write must miss."""
    from etlctl.store import settings as config
    from etlctl.store import connection as etl_db
    from etlctl.actions import flow
    from etlctl.store import jobs

    job_id = db.job("Jira", status=finished())
    with etl_db.connect(config.ConnectionSettings(dsn=db.dsn), "test") as session:
        job = jobs.load(session, job_id)
        assert job.completion.all_finished
        db.set_status(job_id, finished(token="tok-2"))  # restarted and finished again in between
        expected, absent = flow.guard(job.status, flow.RUN_KEYS)
        transition = flow.Transition(job_id, "reset", expected, absent, "test", steps_digest=job.steps_digest,
                                     check_steps=True)
        assert flow.apply(session, [transition]) == []
    assert db.status(job_id)["overall"] == "FINISHED" and db.audit(job_id) == []


def test_a_phase_failing_between_check_and_reset_blocks_the_reset(db):
    from etlctl.store import settings as config
    from etlctl.store import connection as etl_db
    from etlctl.actions import flow
    from etlctl.store import jobs

    job_id = db.job("Jira", status=finished())
    with etl_db.connect(config.ConnectionSettings(dsn=db.dsn), "test") as session:
        job = jobs.load(session, job_id)
        assert job.completion.all_finished
        db.sql("UPDATE etl_jobs SET status = jsonb_set(status, '{steps,jira_dev_status,embedding}', '\"failed\"') WHERE id = %s", job_id)
        expected, absent = flow.guard(job.status, flow.RUN_KEYS)
        transition = flow.Transition(job_id, "reset", expected, absent, "test", steps_digest=job.steps_digest,
                                     check_steps=True)
        assert flow.apply(session, [transition]) == []
    assert db.status(job_id)["overall"] == "FINISHED"


def test_unknown_keys_survive_every_command(db, cli):
    tenant = db.tenant("acme")
    job = db.job("Jira", tenant, db.integration(tenant), status=running(value="running"))
    extra = {"ui_hint": {"a": [1, 2]}, "worker_version": "7.1"}
    db.sql("UPDATE etl_jobs SET status = status || %s::jsonb WHERE id = %s", __import__("json").dumps(extra), job)
    db.sql("UPDATE etl_jobs SET status = jsonb_set(status, '{steps,jira_dev_status,worker}', '\"w-3\"') WHERE id = %s", job)

    def survived():
        status = db.status(job)
        assert {k: status[k] for k in extra} == extra
        assert status["steps"]["jira_dev_status"]["worker"] == "w-3"
        assert status["steps"]["jira_dev_status"]["order"] == 4

    for step_name in JIRA_STEPS:
        for phase in PHASES:
            assert cli("step", job, step_name, phase, "finished").exit_code == 0
    survived()
    assert cli("complete", job, "--delay", "0").exit_code == 0
    survived()
    assert cli("check", job).exit_code == 0
    assert cli("sweep", "--delay", "0", "--cooldown", "0").exit_code == 0
    survived()
    assert db.status(job)["overall"] == "READY"
    assert cli("reset", job, "--force").exit_code == 0
    survived()


def _interleave_before_the_write(monkeypatch, action):
    """Run `action` after `reset` has read and judged the job, just before its guarded write."""
    from etlctl.actions import flow

    real_apply = flow.apply

    def apply_after(session, transitions):
        action()
        return real_apply(session, transitions)

    monkeypatch.setattr(flow, "apply", apply_after)


def test_reset_racing_a_restart_exits_4_and_changes_nothing(db, cli, monkeypatch):
    job = db.job("Jira", db.tenant("acme"), status=finished())
    _interleave_before_the_write(monkeypatch, lambda: db.set_status(job, running(value="idle", token="tok-2")))
    result = cli("reset", job)
    assert result.exit_code == 4
    assert result.stderr == (f"etlctl: job {job} (Jira, tenant acme) changed while resetting it (a worker or another "
                             "etlctl); nothing changed, look again\n")
    assert db.status(job) == running(value="idle", token="tok-2") and db.audit(job) == []


def test_reset_racing_a_failed_phase_never_makes_the_job_ready(db, cli, monkeypatch):
    job = db.job("Jira", db.tenant("acme"), status=finished())
    _interleave_before_the_write(monkeypatch, lambda: db.sql(
        "UPDATE etl_jobs SET status = jsonb_set(status, '{steps,jira_dev_status,embedding}', '\"failed\"') WHERE id = %s", job))
    result = cli("reset", job)
    assert result.exit_code == 4
    status = db.status(job)
    assert status["overall"] == "FINISHED" and status["steps"]["jira_dev_status"]["embedding"] == "failed"


def test_sweep_picks_up_a_job_whose_give_up_belongs_to_an_earlier_run(db, cli):
    """The existing system reset and re-ran the job without clearing etlctl's keys: the old give-up is stale."""
    status = {**finished(), "reset_stage": "gave_up", "reset_deadline": None, "reset_gave_up_at": "2026-01-01T00:00:00+00:00",
              "reset_token": "an-earlier-run"}
    job = db.job("Jira", db.tenant("acme"), status=status, last_run_finished_at="2026-11-01 00:00:00")
    result = cli("sweep", "--json", "--delay", "0", "--cooldown", "0")
    assert [(r["job_id"], r["action"]) for r in result.json()] == [(job, "reset")]
    assert db.status(job)["overall"] == "READY"


@pytest.mark.parametrize("name", ["O'Brien \"quoted\"", "x'; DROP TABLE etl_jobs; --", "Jira; SELECT 1"])
def test_names_with_quotes_or_sql_are_just_names(db, cli, name):
    job = db.job(name, db.tenant("acme"), status=finished())
    assert cli("status", name, "--json").json()["id"] == job
    missing = cli("reset", name + "x")
    assert (missing.exit_code, missing.stderr) == (5, f"etlctl: no job {name + 'x'!r}\n")
    assert cli("reset", name).exit_code == 0
    assert db.value("SELECT count(*) FROM etl_jobs") == 1


def test_a_second_sweep_at_the_same_time_exits_quietly(db, cli):
    job = db.job("Jira", db.tenant("acme"), status=finished(), last_run_finished_at="2026-01-01 00:00:00")
    with psycopg.connect(db.dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtext('etlctl.tick.sweep'))")
        busy = cli("sweep")
        assert (busy.exit_code, busy.stdout, busy.stderr) == (0, "", "")
        assert db.audit(job) == []
        # Released by the statement, not by closing the connection: a closed connection's backend lets go of
        # its locks only when it has finished exiting, which the next sweep may well beat (1 run in 12 failed).
        other.execute("SELECT pg_advisory_unlock(hashtext('etlctl.tick.sweep'))")
    result = cli("sweep", "--json", "--cooldown", "0")
    assert (result.exit_code, [(r["job_id"], r["action"], r["applied"]) for r in result.json()]) == (
        0, [(job, "reset", True)])
    assert db.status(job)["overall"] == "READY"


def test_numbers_python_cannot_hold_exactly_do_not_block_a_reset(db, cli):
    """A guard that compared JSON decoded by Python would never match this document again."""
    job = db.job("Jira", db.tenant("acme"), status=finished())
    db.sql("UPDATE etl_jobs SET status = jsonb_set(status, '{steps,jira_dev_status,ratio}', "
           "to_jsonb(0.12345678901234567890123::numeric)) WHERE id = %s", job)
    assert cli("reset", job).exit_code == 0
    assert db.value("SELECT status #>> '{steps,jira_dev_status,ratio}' FROM etl_jobs WHERE id = %s", job) == \
        "0.12345678901234567890123"
    again = db.job("Jira 2", db.tenant("beta"), status=finished(), last_run_finished_at="2026-01-01 00:00:00")
    db.sql("UPDATE etl_jobs SET status = jsonb_set(status, '{steps,jira_dev_status,ratio}', "
           "to_jsonb(0.12345678901234567890123::numeric)) WHERE id = %s", again)
    result = cli("wait-and-reset", again, "--delay", "0", "--cooldown", "0")
    assert result.exit_code == 0, result.stderr
    assert db.status(again)["overall"] == "READY"


def test_a_row_locked_by_another_session_does_not_stall_a_sweep(db, cli):
    tenant = db.tenant("acme")
    held = db.job("Jira", tenant, status=finished(), last_run_finished_at="2026-01-01 00:00:00")
    free = db.job("Jira 2", tenant, status=finished(), last_run_finished_at="2026-01-01 00:00:00")
    with psycopg.connect(db.dsn) as other:
        other.execute("SELECT 1 FROM etl_jobs WHERE id = %s FOR UPDATE", (held,))
        result = cli("sweep", "--json", "--delay", "0", "--cooldown", "0", "--lock-timeout", "1")
        assert result.exit_code == 0, result.stderr
        assert {(r["job_id"], r["action"]) for r in result.json()} == {(free, "reset"), (held, "lost-race")}
        other.rollback()
    assert db.status(free)["overall"] == "READY" and db.status(held)["overall"] == "FINISHED"
    assert cli("sweep", "--delay", "0", "--cooldown", "0").exit_code == 0  # next tick: its turn
    assert db.status(held)["overall"] == "READY"


def test_dry_run_of_db_init_and_the_queue_changes_nothing(db, cli, blank_db):
    from tests.helpers import Cli

    fresh = Cli(blank_db.dsn)("db", "init", "--dry-run")
    assert fresh.stdout.startswith("would create etlctl's schema on an empty database: 0001_etlctl_schema")
    assert blank_db.value("SELECT to_regclass('etl_jobs') IS NULL")
    tenant = db.tenant("acme")
    db.job("Jira", tenant, db.integration(tenant))
    assert cli("schedule-next").exit_code == 0
    claim = cli("queue", "claim", "--worker", "w", "--dry-run", "--json").json()
    assert claim["dry_run"] is True and db.value("SELECT claimed_at FROM etlctl.queue") is None
    assert cli("queue", "done", claim["id"], "--dry-run").stdout == f"message {claim['id']} would be done\n"
    assert db.value("SELECT done_at FROM etlctl.queue") is None


def test_wait_and_reset_dry_run_exits_as_the_real_run_would(db, cli):
    job = db.job("Jira", db.tenant("acme"), status=running())
    result = cli("wait-and-reset", job, "--dry-run")
    assert result.exit_code == 4 and "next: skip" in result.stdout


def test_reset_suggests_force_only_where_force_would_reset(db, cli):
    """READY and RATE_LIMIT_REACHED are no run to end: --force would not help, so it is not suggested."""
    ready = db.job("Ready", status={"overall": "READY", "steps": {}})
    limited = db.job("Limited", status={"overall": "RATE_LIMIT_REACHED", "steps": {}})
    failed = db.job("Failed", status={"overall": "FAILED", "steps": {}})
    for job, told in ((ready, "nothing to reset"),
                      (limited, "nothing to reset: schedule-next starts it once next_run passes"),
                      (failed, "nothing to reset (--force overrides)")):
        result = cli("reset", job)
        label = db.value("SELECT job_name FROM etl_jobs WHERE id = %s", job)
        state = db.status(job)["overall"]
        tenant = db.value("SELECT t.name FROM tenants t JOIN etl_jobs j ON j.tenant_id = t.id WHERE j.id = %s", job)
        assert (result.exit_code, result.stdout, result.stderr) == (
            4, "", f"etlctl: job {job} ({label}, tenant {tenant}) is {state}, not FINISHED: {told}\n")
    assert cli("reset", limited, "--force").exit_code == 4  # as the hint says: --force does not reset it either
