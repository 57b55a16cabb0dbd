"""schedule-next: due rules, what starting means, explain, chaining, and the queue."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import psycopg

from tests.helpers import JIRA_STEPS, PHASES, finished, running, steps

NOW = datetime(2026, 11, 28, 15, 0, 0, tzinfo=timezone.utc)
FROZEN_AT = NOW




def naive(delta_seconds: float = 0) -> str:
    return (NOW + timedelta(seconds=delta_seconds)).strftime("%Y-%m-%d %H:%M:%S")




def started_ids(result) -> list[int]:
    assert result.exit_code == 0, result.stderr
    return [row["job_id"] for row in result.json()["started"]]


# --- due rules -----------------------------------------------------------------------


def test_ready_jobs_are_due_when_next_run_passed_or_null(db, cli, frozen, acme):
    null = db.job("Null", acme, db.integration(acme), next_run=None)
    past = db.job("Past", acme, db.integration(acme), next_run=naive(-1))
    future = db.job("Future", acme, db.integration(acme), next_run=naive(+60))
    assert sorted(started_ids(cli("schedule-next", "--json"))) == [null, past]
    assert db.status(future)["overall"] == "READY"
    frozen.frozen.tick(61)
    assert started_ids(cli("schedule-next", "--json")) == [future]


def test_failed_jobs_are_retried_only_after_their_interval(db, cli, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme), status={"overall": "FAILED", "token": "t0", "steps": {}},
                 retry_interval_minutes=15, retry_count=2,
                 last_run_started_at=naive(-3600), last_run_finished_at=naive(-600), last_updated_at=naive(-600))
    explained = cli("schedule-next", "--dry-run", "--explain")
    assert explained.stdout == f"not starting job {job} (Jira, tenant acme): FAILED, retry at 15:05:00 (in 5m)\n"
    frozen.frozen.tick(299)
    assert started_ids(cli("schedule-next", "--json")) == []
    frozen.frozen.tick(1)
    assert started_ids(cli("schedule-next", "--json")) == [job]
    row = db.row(job)
    assert (row["status"]["overall"], row["retry_count"]) == ("RUNNING", 3)


def test_rate_limited_jobs_resume_when_next_run_passes(db, cli, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme), status={"overall": "RATE_LIMIT_REACHED", "steps": {}},
                 next_run=naive(+30), retry_count=0)
    assert started_ids(cli("schedule-next", "--json")) == []
    frozen.frozen.tick(30)
    assert started_ids(cli("schedule-next", "--json")) == [job]
    assert db.row(job)["retry_count"] == 0  # only a FAILED retry counts


def test_naive_next_run_is_read_in_the_configured_zone(db, cli, frozen, acme):
    # 10:30 in New York is 15:30 UTC: not due at 15:00 UTC, due at 15:31 UTC.
    job = db.job("Jira", acme, db.integration(acme), next_run="2026-11-28 10:30:00")
    ny = {"ETLCTL_DB_TIMEZONE": "America/New_York"}
    assert started_ids(cli("schedule-next", "--json", env=ny)) == []
    utc_run = cli("schedule-next", "--json", "--dry-run")  # read as UTC, 10:30 is long past
    assert started_ids(utc_run) == [job]
    frozen.frozen.tick(31 * 60)
    assert started_ids(cli("schedule-next", "--json", env=ny)) == [job]
    # last_run_started_at is written in the same zone: 15:31 UTC is 10:31 in New York.
    assert str(db.row(job)["last_run_started_at"]) == "2026-11-28 10:31:00"


def test_inactive_jobs_integrations_and_tenants_never_start(db, cli, frozen):
    on, off = db.tenant("on"), db.tenant("off", active=False)
    inactive_job = db.job("Jira", on, db.integration(on), active=False)
    inactive_integration = db.job("GitHub", on, db.integration(on, "GitHub", active=False))
    inactive_tenant = db.job("Jira", off, db.integration(off))
    result = cli("schedule-next", "--dry-run", "--explain")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"not starting job {inactive_job} (Jira, tenant on): job inactive",
        f"not starting job {inactive_integration} (GitHub, tenant on): integration 2 inactive",
        f"not starting job {inactive_tenant} (Jira, tenant off): tenant off inactive",
    ]
    assert cli("schedule-next").stdout == ""
    assert db.value("SELECT count(*) FROM etl_jobs WHERE status->>'overall' = 'RUNNING'") == 0


def test_one_job_in_flight_per_integration_earliest_next_run_first(db, cli, frozen, acme):
    integration = db.integration(acme)
    later = db.job("Later", acme, integration, next_run=naive(-10))
    earlier = db.job("Earlier", acme, integration, next_run=naive(-20))
    result = cli("schedule-next", "--explain")
    assert result.stdout.splitlines()[0].startswith(f"started job {earlier} (Earlier): READY -> RUNNING, run ")
    assert result.stdout.splitlines()[1] == (
        f"not starting job {later} (Later, tenant acme): integration {integration}: job {earlier} starts first (earlier next_run)")
    frozen.frozen.tick(7200)
    busy = cli("schedule-next", "--dry-run", "--explain")
    assert f"not starting job {later} (Later, tenant acme): integration {integration} busy with job {earlier} (RUNNING for 2h)" in busy.stdout
    # FINISHED and not yet reset still counts as in flight.
    db.set_status(earlier, finished())
    assert started_ids(cli("schedule-next", "--json")) == []
    db.set_status(earlier, {"overall": "READY", "steps": {}})
    db.sql("UPDATE etl_jobs SET next_run = %s WHERE id = %s", naive(+3600), earlier)
    assert started_ids(cli("schedule-next", "--json")) == [later]


def test_jobs_without_an_integration_are_scheduled_on_their_own(db, cli, frozen, acme):
    """The rule: a job with no integration is its own group; only it and its tenant must be active."""
    a = db.job("GitHub", acme, None, status=running(token="x"))
    b = db.job("Jira", acme, None, status={"overall": "READY", "steps": {"only": {p: "idle" for p in PHASES}}})
    c = db.job("Jira", db.tenant("beta"), None)
    assert sorted(started_ids(cli("schedule-next", "--json"))) == [b, c]
    assert db.status(a)["overall"] == "RUNNING"


def test_starting_a_job(db, cli, frozen, acme):
    integration = db.integration(acme, "Jira")
    status = {"overall": "READY", "token": None, "ui": "keep", "reset_stage": "gave_up",
              "steps": steps(JIRA_STEPS[:2], "finished")}
    status["steps"][JIRA_STEPS[0]]["display_name"] = "Custom name"
    job = db.job("Jira", acme, integration, status=status)
    with psycopg.connect(db.dsn, autocommit=True) as listener:
        listener.execute("LISTEN etl_job_status")
        result = cli("schedule-next", "--json")
        note = next(listener.notifies(timeout=5))
    started = result.json()["started"][0]
    token = started["token"]
    uuid.UUID(token)
    row = db.row(job)
    assert row["status"]["overall"] == "RUNNING" and row["status"]["token"] == token
    assert row["status"]["ui"] == "keep" and row["status"]["reset_stage"] is None
    assert row["status"]["steps"][JIRA_STEPS[0]] == {"order": 1, "display_name": "Custom name", **{p: "idle" for p in PHASES}}
    assert row["status"]["steps"][JIRA_STEPS[3]] == {"order": 4, "display_name": "Development Status",
                                                     **{p: "idle" for p in PHASES}}
    assert row["status"]["steps"]["jira_sprint_reports"] == {"order": 5, "display_name": "Sprint Reports",
                                                             **{p: "idle" for p in PHASES}}
    assert str(row["last_run_started_at"]) == naive()
    queue = db.sql("SELECT * FROM etlctl.queue")
    assert len(queue) == 1 and queue[0]["id"] == started["queue_id"]
    assert queue[0]["queue_name"] == "extraction_queue_premium"
    assert queue[0]["message"] == {"tenant_id": acme, "integration_id": integration, "job_id": job,
                                   "type": JIRA_STEPS[0], "provider": "jira", "token": token,
                                   "old_last_sync_date": None}
    audit = db.audit(job)
    assert [(a["from_state"], a["to_state"], a["token"], a["command"]) for a in audit] == [
        ("READY", "RUNNING", token, "schedule-next")]
    assert json.loads(note.payload) == {"job_id": job, "tenant_id": acme, "overall": "RUNNING"}


def test_quiet_when_nothing_to_start_and_dry_run_changes_nothing(db, cli, frozen, acme):
    quiet = cli("schedule-next")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    job = db.job("Jira", acme, db.integration(acme))
    dry = cli("schedule-next", "--dry-run")
    assert dry.stdout.startswith(f"would start job {job} (Jira): READY -> RUNNING, run ")
    assert db.status(job)["overall"] == "READY"
    assert db.value("SELECT count(*) FROM etlctl.queue") == 0 and db.audit() == []


def test_limit_and_tenant(db, cli, frozen):
    acme, beta = db.tenant("acme"), db.tenant("beta")
    a = [db.job(f"J{i}", acme, db.integration(acme), next_run=naive(-i)) for i in range(3)]
    b = db.job("J", beta, db.integration(beta))
    assert started_ids(cli("schedule-next", "--json", "--tenant", "beta")) == [b]
    assert started_ids(cli("schedule-next", "--json", "--limit", "2")) == [a[1], a[2]]  # earliest first


def test_a_job_of_unknown_kind_or_of_a_kind_without_message_is_not_started(db, cli, frozen, acme):
    steps_of_its_own = {"overall": "READY", "steps": {"pages": {p: "idle" for p in PHASES}}}
    unknown = db.job("Confluence", acme, db.integration(acme, "Confluence"), status=steps_of_its_own)
    wex = db.job("WEX Fabric", acme, None)
    result = cli("schedule-next", "--explain", "--dry-run")
    assert result.stdout == (
        f"not starting job {unknown} (Confluence, tenant acme): no job kind matches its name or its provider: "
        "no message to queue, never started\n"
        f"not starting job {wex} (WEX Fabric, tenant acme): kind wex fabric defines no message (no worker takes its "
        "runs): never started\n")
    # A kind is data: give it a message and its jobs start.
    db.sql("UPDATE etlctl.job_kinds SET message_provider = 'wex' WHERE name = 'wex fabric'")
    assert started_ids(cli("schedule-next", "--json")) == [wex]


def test_explain_agrees_with_the_scheduler_on_every_job(db, cli, frozen):
    """The SQL rule decides and the Python explanation describes: they must never disagree."""
    import random

    rng = random.Random(7)
    tenants = [db.tenant(f"t{i}", active=rng.random() > 0.2) for i in range(4)]
    for n in range(60):
        tenant = rng.choice(tenants)
        integration = None if rng.random() < 0.15 else db.integration(tenant, "Jira", active=rng.random() > 0.2)
        state = rng.choice(["READY", "READY", "FAILED", "RATE_LIMIT_REACHED", "RUNNING", "FINISHED"])
        db.job(f"Jira {n}", tenant, integration, status={"overall": state, "token": "t", "steps": {}},
               active=rng.random() > 0.1, next_run=rng.choice([None, naive(-100), naive(+100)]),
               last_run_finished_at=naive(rng.choice([-2000, -100])), retry_interval_minutes=rng.choice([1, 30]))
    plan = cli("schedule-next", "--dry-run", "--explain", "--json").json()
    started = {r["job_id"] for r in plan["started"]}
    explained = {r["job_id"]: r["reason"] for r in plan["not_started"]}
    assert started and explained
    assert started.isdisjoint(explained)
    assert len(started) + len(explained) == 60
    # Each explanation is the one the rules give for what was seeded (a reference written from the README's
    # due rule, not from etlctl.core.due): the first rule that stops the job, in the README's order.
    expected = reference_explanations(db, started)
    assert explained == expected
    assert {reason.split(" ")[0].rstrip(",") for reason in explained.values()} >= {
        "RUNNING", "FINISHED", "next_run", "FAILED", "integration", "job", "tenant", "no"}  # each rule, at least once


def reference_explanations(db, started: set[int]) -> dict[int, str]:
    from etlctl.core.humanize import clock_time, duration, relative

    rows = db.sql("""SELECT j.id, j.status ->> 'overall' AS overall, j.active, j.integration_id, i.active AS i_active,
                            j.tenant_id, t.name AS tenant, t.active AS t_active, j.retry_interval_minutes,
                            j.next_run::timestamptz AS next_run, j.last_run_finished_at::timestamptz AS finished,
                            j.last_updated_at::timestamptz AS updated
                     FROM etl_jobs j JOIN tenants t ON t.id = j.tenant_id
                     LEFT JOIN integrations i ON i.id = j.integration_id ORDER BY j.id""")
    in_flight = {}  # integration -> the first job (by id) RUNNING or FINISHED on it, and since when
    for r in rows:
        if r["integration_id"] is not None and r["overall"] in ("RUNNING", "FINISHED"):
            in_flight.setdefault(r["integration_id"], r)
    winners = {r["integration_id"]: r["id"] for r in rows if r["id"] in started and r["integration_id"] is not None}
    out = {}
    for r in rows:
        if r["id"] in started:
            continue
        if r["overall"] == "RUNNING":
            out[r["id"]] = "RUNNING (in flight)"  # seeded without a start time
            continue
        if r["overall"] == "FINISHED":
            out[r["id"]] = "FINISHED, waiting for its reset (in flight)"
            continue
        off = (["job"] if not r["active"] else []) + (
            [f"integration {r['integration_id']}"] if r["integration_id"] is not None and not r["i_active"] else []) + (
            [f"tenant {r['tenant']}"] if not r["t_active"] else [])
        if off:
            out[r["id"]] = " and ".join(off) + (" inactive" if len(off) == 1 else " are inactive")
            continue
        if r["integration_id"] is None:  # "Jira 7" names no kind; only a Jira integration's provider does
            out[r["id"]] = "no job kind matches its name or its provider: no message to queue, never started"
            continue
        if r["overall"] == "FAILED":  # due retry_interval_minutes after the latest start, finish or update
            due = max(d for d in (r["finished"], r["updated"]) if d) + timedelta(minutes=r["retry_interval_minutes"])
            if due > NOW:
                out[r["id"]] = f"FAILED, retry at {clock_time(due)} ({relative(due, NOW)})"
                continue
        elif r["next_run"] is not None and r["next_run"] > NOW:
            out[r["id"]] = f"next_run {relative(r['next_run'], NOW)} ({clock_time(r['next_run'])})"
            continue
        busy = in_flight.get(r["integration_id"])
        if busy is not None and busy["id"] != r["id"]:
            held = (f" for {duration((NOW - (busy['finished'] or busy['updated'])).total_seconds())}"
                    if busy["overall"] == "FINISHED" else "")
            out[r["id"]] = f"integration {r['integration_id']} busy with job {busy['id']} ({busy['overall']}{held})"
        elif r["integration_id"] in winners:
            out[r["id"]] = f"integration {r['integration_id']}: job {winners[r['integration_id']]} starts first (earlier next_run)"
        else:
            out[r["id"]] = "due, but not started this tick (limit reached, or another scheduler holds its integration)"
    return out


# --- next steps ------------------------------------------------------------------------


def test_the_next_step_is_queued_once_when_the_current_one_finished(db, cli, frozen, acme):
    db.sql("UPDATE etlctl.kind_steps SET chain = true WHERE kind = 'jira'")  # an operator opts in
    integration = db.integration(acme)
    job = db.job("Jira", acme, integration, status=running(value="idle", token="run-1",
                                                          jira_projects_and_issue_types__extraction="finished",
                                                          jira_projects_and_issue_types__transform="finished",
                                                          jira_projects_and_issue_types__embedding="finished"),
                 last_updated_at=naive(-5))
    result = cli("schedule-next", "--chain-grace", "0")
    assert result.stdout == f"queued job {job}: jira_statuses_and_relationships extraction (next step)\n"
    queue = db.sql("SELECT step, token, queue_name, message FROM etlctl.queue")
    assert [(q["step"], q["token"], q["queue_name"], q["message"]["type"], q["message"]["provider"]) for q in queue] == [
        ("jira_statuses_and_relationships", "run-1", "extraction_queue_premium", "jira_statuses_and_relationships",
         "jira")]
    assert cli("schedule-next", "--chain-grace", "0").stdout == ""  # idempotent
    assert db.value("SELECT count(*) FROM etlctl.queue") == 1


def test_steps_are_chained_only_where_the_kind_says_so(db, cli, frozen, acme):
    """The seeded kinds' workers chain their own steps: schedule-next never queues a later step of theirs."""
    first_done = {f"jira_projects_and_issue_types__{p}": "finished" for p in PHASES}
    job = db.job("Jira", acme, db.integration(acme), status=running(value="idle", token="r", **first_done),
                 last_updated_at=naive(-3600))
    assert cli("schedule-next", "--chain-grace", "0").stdout == ""
    assert db.value("SELECT count(*) FROM etlctl.queue") == 0
    db.sql("UPDATE etlctl.kind_steps SET chain = true WHERE kind = 'jira' AND step = 'jira_statuses_and_relationships'")
    assert cli("schedule-next").stdout == f"queued job {job}: jira_statuses_and_relationships extraction (next step)\n"


def test_workers_that_chain_steps_themselves_are_left_alone(db, cli, frozen, acme):
    db.sql("UPDATE etlctl.kind_steps SET chain = true WHERE kind = 'jira'")
    first_done = {f"jira_projects_and_issue_types__{p}": "finished" for p in PHASES}
    recent = db.job("Jira", acme, db.integration(acme), status=running(value="idle", token="r", **first_done),
                    last_updated_at=naive(-5))
    chained = db.job("Jira", db.tenant("beta"), None,
                     status=running(value="idle", token="c", jira_statuses_and_relationships__extraction="running",
                                    **first_done), last_updated_at=naive(-3600))
    assert cli("schedule-next").stdout == ""  # default grace 60 s: `recent` was touched 5 s ago
    assert db.value("SELECT count(*) FROM etlctl.queue") == 0
    frozen.frozen.tick(60)
    assert cli("schedule-next").stdout == f"queued job {recent}: jira_statuses_and_relationships extraction (next step)\n"
    assert db.value("SELECT count(*) FROM etlctl.queue WHERE job_id = %s", chained) == 0


# --- the queue ---------------------------------------------------------------------------


def test_queue_claim_ls_and_done(db, cli, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme))
    assert cli("schedule-next").exit_code == 0
    empty_transform = cli("queue", "claim", "--phase", "transform", "--worker", "w")
    assert (empty_transform.exit_code, empty_transform.stderr) == (3, "etlctl: no unclaimed transform message\n")
    claimed = cli("queue", "claim", "--worker", "shell-1", "--json")
    assert claimed.exit_code == 0
    message = claimed.json()
    assert (message["job_id"], message["step"], message["claimed_by"]) == (job, JIRA_STEPS[0], "shell-1")
    assert cli("queue", "claim", "--worker", "shell-2").exit_code == 3  # nothing left
    pending = cli("queue", "ls", "--pending", "--json").json()
    assert [(m["id"], m["claimed_by"], m["current_run"]) for m in pending] == [(message["id"], "shell-1", True)]
    done = cli("queue", "done", message["id"])
    assert (done.exit_code, done.stdout) == (0, f"message {message['id']} done\n")
    assert cli("queue", "done", message["id"]).stdout == f"message {message['id']} was already done\n"
    assert cli("queue", "ls", "--pending", "--json").json() == []
    missing = cli("queue", "done", 999)
    assert (missing.exit_code, missing.stderr) == (5, "etlctl: no queue message 999\n")


def test_a_second_tick_at_the_same_time_exits_quietly(db, cli, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme))
    with psycopg.connect(db.dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtext('etlctl.tick.schedule'))")
        busy = cli("schedule-next")
        assert (busy.exit_code, busy.stdout, busy.stderr) == (0, "", "")
        assert cli("schedule-next", "--json").json()["locked_out"] is True
        assert db.status(job)["overall"] == "READY"
        # Released by the statement, not by closing the connection: a closed connection's backend lets go of
        # its locks only when it has finished exiting, which the next tick may well beat (1 run in 12 failed).
        other.execute("SELECT pg_advisory_unlock(hashtext('etlctl.tick.schedule'))")
    assert started_ids(cli("schedule-next", "--json")) == [job]


def test_unknown_keys_survive_a_start(db, cli, frozen, acme):
    status = {"overall": "READY", "ui": {"x": [1]}, "steps": {"jira_dev_status": {"worker": "w-1", "order": 9}}}
    job = db.job("Jira", acme, db.integration(acme), status=status)
    assert started_ids(cli("schedule-next", "--json")) == [job]
    after = db.status(job)
    assert after["ui"] == {"x": [1]}
    assert after["steps"]["jira_dev_status"] == {"worker": "w-1", "order": 9, "display_name": "Development Status",
                                                 **{p: "idle" for p in PHASES}}


def test_a_row_locked_by_another_session_does_not_stall_a_tick(db, cli, frozen, acme):
    held = db.job("Jira", acme, db.integration(acme))
    free = db.job("GitHub", acme, db.integration(acme, "GitHub"))
    with psycopg.connect(db.dsn) as other:
        other.execute("SELECT 1 FROM etl_jobs WHERE id = %s FOR UPDATE", (held,))
        assert started_ids(cli("schedule-next", "--json", "--lock-timeout", "1")) == [free]
        other.rollback()
    assert started_ids(cli("schedule-next", "--json")) == [held]


def test_claim_skips_messages_of_runs_that_are_over(db, cli, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme))
    assert cli("schedule-next").exit_code == 0
    assert cli("reset", job, "--force").exit_code == 0  # that run is over; its message is stale
    db.sql("UPDATE etl_jobs SET next_run = NULL WHERE id = %s", job)
    assert cli("schedule-next").exit_code == 0
    current = db.status(job)["token"]
    claimed = cli("queue", "claim", "--worker", "w", "--json").json()
    assert claimed["token"] == current
    assert cli("queue", "claim", "--worker", "w").exit_code == 3  # the stale one is never handed out
    stale = [m for m in cli("queue", "ls", "--pending", "--json").json() if not m["current_run"]]
    assert len(stale) == 1 and stale[0]["claimed_at"] is None
