"""etlctl why: the right sentence for each state, through the CLI and from the pure explain()."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


from etlctl.oncall import why as explain
from etlctl.oncall.facts import Facts, RunHistory
from etlctl.core import lifecycle
from etlctl.core.job import Job
from tests.helpers import JIRA_STEPS, finished, running

NOW = datetime(2026, 11, 28, 10, 41, 0, tzinfo=timezone.utc)
FROZEN_AT = NOW




def naive(delta_seconds: float = 0) -> str:
    return (NOW + timedelta(seconds=delta_seconds)).strftime("%Y-%m-%d %H:%M:%S")


def iso(delta_seconds: float = 0) -> str:
    return (NOW + timedelta(seconds=delta_seconds)).isoformat()




def why(cli, job) -> str:
    result = cli("why", job)
    assert (result.exit_code, result.stderr) == (0, ""), result.stderr
    return result.stdout


# --- the four sentences of the issue, exactly ---------------------------------------------


def test_reset_pending(db, cli, frozen, acme):
    status = finished(jira_dev_status__embedding="running")
    status.update(reset_stage="check", reset_attempt=1, reset_deadline=iso(70))
    job = db.job("Jira", acme, db.integration(acme), status=status, last_run_finished_at=naive(-60),
                 last_updated_at=naive(-30))
    assert why(cli, job) == (
        f"job {job} (Jira, tenant acme)\n"
        "  state    FINISHED 1m ago (at 10:40:00), run tok-1\n"
        "  waiting  reset pending: attempt 2 of 5, next check at 10:42:10 (in 1m10s)\n"
        "           not finished: jira_dev_status.embedding still running (no change to the job since 10:40:30, 30s ago)\n"
        "  next     if still not finished, checks 3 to 5 follow and the flow gives up at about 10:51:10 (in 10m10s)\n"
    )


def test_ready_with_next_run_ahead(db, cli, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme), next_run=naive(4 * 3600 + 12 * 60))
    assert why(cli, job) == (
        f"job {job} (Jira, tenant acme)\n"
        "  state    READY; next_run in 4h12m\n"
        "  waiting  next_run at 14:53:00 (2026-11-28)\n"
        "  next     schedule-next starts it at 14:53:00 if integration 1 is idle then\n"
    )


def test_blocked_by_a_busy_integration(db, cli, frozen, acme):
    db.sql("INSERT INTO integrations (id, provider, type, tenant_id) VALUES (7, 'Jira', 'Data', %s)", acme)
    db.sql("INSERT INTO etl_jobs (id, job_name, tenant_id, integration_id, status, last_run_started_at) "
           "VALUES (12, 'Jira', %s, 7, %s, %s)", acme, _json(running(value="running")), naive(-3 * 3600))
    job = db.job("Jira 2", acme, 7, next_run=naive(-60))
    assert why(cli, job) == (
        f"job {job} (Jira 2, tenant acme)\n"
        "  state    READY\n"
        "  waiting  blocked: integration 7 busy with job 12 (RUNNING for 3h)\n"
        "  next     it starts after job 12 is reset to READY (`etlctl why 12`)\n"
    )


def test_gave_up(db, cli, frozen, acme):
    status = finished(jira_dev_status__embedding="running")
    status.update(reset_stage="gave_up", reset_attempt=4, reset_gave_up_at=iso(10 * 60 + 10))
    job = db.job("Jira", acme, status=status, last_run_finished_at=naive(-60),
                 error_message="gave up after 5 checks: jira_dev_status.embedding: still running")
    frozen.frozen.tick(20 * 60)
    assert why(cli, job) == (
        f"job {job} (Jira, tenant acme)\n"
        "  state    FINISHED 21m ago (at 10:40:00), run tok-1\n"
        "  waiting  gave up at 10:51: jira_dev_status.embedding still running\n"
        f"  next     nothing happens by itself: when the steps have finished, run `etlctl reset {job}`; "
        f"or `etlctl reset {job} --force` (overrides the check)\n"
    )


# --- every other state ---------------------------------------------------------------------


def test_running_names_the_step_it_waits_for_and_since_when(db, cli, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme), status=running(value="idle", token="r1"),
                 last_run_started_at=naive(-1800))
    assert cli("step", job, "jira_projects_and_issue_types", "extraction", "running").exit_code == 0
    frozen.frozen.tick(125)
    out = why(cli, job)
    host = out.split(" on ")[1].split(" as ")[0]
    assert out == (
        f"job {job} (Jira, tenant acme)\n"
        "  state    RUNNING for 32m05s (run r1, started 10:11:00)\n"
        f"  waiting  jira_projects_and_issue_types.extraction still running since 10:41:00 (2m05s ago; set by "
        f"`etlctl step` on {host} as postgres)\n"
        # jira_dev_status may stay idle (etlctl.step_rules): nothing to wait for there
        "           then jira_statuses_and_relationships, jira_issues_with_changelogs\n"
        "  next     when the run completes: FINISHED, then the reset flow checks it 30s later\n"
    )


def test_running_with_every_step_finished_waits_for_completion(db, cli, frozen, acme):
    job = db.job("Jira", acme, status=running(), last_run_started_at=naive(-60))
    assert "  waiting  every step finished: waiting for the embedding worker to complete the run\n" in why(cli, job)


def test_finished_with_no_reset_pending(db, cli, frozen, acme):
    job = db.job("Jira", acme, status=finished(), last_run_finished_at=naive(-10))
    assert why(cli, job).splitlines()[2:] == [
        "  waiting  no reset pending yet: the first check is due at 10:41:20 (in 20s)",
        "           every step has finished: the check will pass",
        f"  next     at 10:41:20 the sweep from cron (or `etlctl wait-and-reset {job}`) checks the steps",
    ]
    frozen.frozen.tick(3600)
    assert why(cli, job).splitlines()[2:] == [
        "  waiting  no reset pending: the first check was due at 10:41:20 (59m40s ago)",
        "           every step has finished: the check will pass",
        "  next     the next sweep from cron (or wait-and-reset) checks it",
        "           it is overdue: nothing runs the reset flow (is sweep in cron? doctor says more)",
    ]


def test_cooldown(db, cli, frozen, acme):
    status = finished()
    status.update(reset_stage="cooldown", reset_attempt=0, reset_deadline=iso(20))
    job = db.job("Jira", acme, status=status, last_run_finished_at=naive(-40), schedule_interval_minutes=60)
    assert why(cli, job).splitlines()[2:] == [
        "  waiting  reset pending: cool-down ends at 10:41:20 (in 20s)",
        "  next     then READY; next run about 11:41:20 (1h after the reset)",
    ]


def test_the_last_check_and_a_failed_phase(db, cli, frozen, acme):
    status = finished(jira_dev_status__embedding="running")
    status.update(reset_stage="check", reset_attempt=4, reset_deadline=iso(100))
    last = db.job("Jira", acme, status=status, last_run_finished_at=naive(-500))
    assert why(cli, last).splitlines()[-1] == "  next     if it still fails, this last check gives up"
    status = finished(jira_dev_status__transform="failed")
    status.update(reset_stage="check", reset_attempt=0, reset_deadline=iso(10))
    failed = db.job("Jira", db.tenant("beta"), status=status, last_run_finished_at=naive(-20))
    assert why(cli, failed).splitlines()[-1] == "  next     a phase failed: the check gives up at once (waiting cannot help)"


def test_due_now_and_overdue(db, cli, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme), next_run=naive(-60))
    assert why(cli, job).splitlines()[1:] == [
        "  state    READY",
        "  waiting  nothing: due since 10:40:00 (1m ago)",
        "  next     the next schedule-next from cron starts it: RUNNING, first step jira_projects_and_issue_types",
    ]
    frozen.frozen.tick(600)
    assert why(cli, job).splitlines()[-1] == (
        "           it is overdue: is schedule-next running from cron? (doctor says more)")


def test_failed_waiting_for_its_retry(db, cli, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme), status={"overall": "FAILED", "steps": {}}, retry_count=2,
                 retry_interval_minutes=15, error_message="HTTP 502", last_run_finished_at=naive(-300),
                 last_updated_at=naive(-300))
    assert why(cli, job).splitlines()[1:] == [
        "  state    FAILED: HTTP 502 (retries so far: 2)",
        "  waiting  retry at 10:51:00 (in 10m), 15 min after its last run",
        "  next     schedule-next starts it again at 10:51:00",
    ]


def test_inactive(db, cli, frozen):
    off = db.tenant("globex", active=False)
    job = db.job("Jira", off, db.integration(off))
    assert why(cli, job).splitlines()[2:] == [
        "  waiting  blocked: tenant globex inactive",
        "  next     nothing until it is active again (the flag is set outside etlctl)",
    ]


def test_json(db, cli, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme), next_run=naive(4 * 3600 + 12 * 60))
    result = cli("why", "Jira", "--tenant", "acme", "--json")
    assert result.exit_code == 0
    assert result.json() == {
        "job_id": job, "job": f"job {job} (Jira, tenant acme)", "code": "not_due",
        "state": ["READY; next_run in 4h12m"], "waiting": ["next_run at 14:53:00 (2026-11-28)"],
        "next": ["schedule-next starts it at 14:53:00 if integration 1 is idle then"],
        "next_at": "2026-11-28T14:53:00+00:00",
    }


def test_unknown_job_exits_5(cli):
    result = cli("why", "404")
    assert (result.exit_code, result.stderr) == (5, "etlctl: no job 404\n")


# --- explain() alone: no database ------------------------------------------------------


def _facts(status, **columns) -> Facts:
    row = {"id": 3, "job_name": "Jira", "tenant_id": 1, "tenant_name": "acme", "integration_id": None, "provider": None,
           "kind": "jira", "kind_steps": [{"step": s, "position": n, "rule": "finished"} for n, s in enumerate(JIRA_STEPS, 1)],
           "status": status, "next_run": None, "schedule_interval_minutes": 360, "retry_interval_minutes": 15,
           "retry_count": 0, "last_sync_date": None, "last_run_started_at": None, "last_run_finished_at": None,
           "last_updated_at": None, "last_audit_at": None, "error_message": None, "active": True,
           "integration_active": None, "tenant_active": True, "now": NOW, **columns}
    return Facts(Job.from_row(row))


def test_explain_is_pure_and_follows_the_timings():
    status = finished(jira_dev_status__embedding="running")
    status.update(reset_stage="check", reset_attempt=0, reset_deadline=iso(5))
    facts = _facts(status, last_run_finished_at=NOW - timedelta(seconds=25))
    quick = lifecycle.Timings(delay=5, backoff=(10, 20), cooldown=5)
    result = explain.explain(facts, quick)
    assert result.code == "reset_pending"
    assert result.waiting[0] == "reset pending: attempt 1 of 3, next check at 10:41:05 (in 5s)"
    assert result.next == ["if still not finished, checks 2 and 3 follow and the flow gives up at about 10:41:35 (in 35s)"]
    assert result.next_at == NOW + timedelta(seconds=5)


def test_explain_a_running_job_far_longer_than_usual():
    facts = _facts({"overall": "RUNNING", "token": "t", "steps": {}}, last_run_started_at=NOW - timedelta(hours=3))
    facts = Facts(facts.job, history=RunHistory(runs=4, median=1800, longest=2400))
    result = explain.explain(facts)
    assert result.state == ["RUNNING for 3h (run t, started 07:41:00)",
                            "far longer than usual: its last 4 runs took 30m (median), 40m at most"]


def test_explain_an_unreadable_reset_state():
    status = finished()
    status["reset_stage"] = "later"
    result = explain.explain(_facts(status, last_run_finished_at=NOW))
    assert (result.code, result.waiting) == ("reset_unreadable", ["nothing: its reset state is unreadable (reset_stage is 'later')"])


def _json(value):
    from psycopg.types.json import Jsonb

    return Jsonb(value)


def test_a_step_idle_since_the_start_says_so(db, cli, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme))
    assert cli("schedule-next").exit_code == 0
    frozen.frozen.tick(300)
    out = cli("why", job).stdout
    assert "jira_projects_and_issue_types not started (all phases idle) (idle since the run started at 10:41:00, 5m ago)" in out
    assert "set outside etlctl" not in out
