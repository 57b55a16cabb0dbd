"""etlctl doctor on crafted databases: each problem found, with its cause and a fix that works; nothing on a healthy one."""

from __future__ import annotations

import re
import shlex
import time
from datetime import datetime, timedelta, timezone

import pytest

from etlctl.oncall import doctor
from tests.helpers import Cli, finished, running
from tests.test_schema import load_existing_system, snapshot_rows

NOW = datetime(2026, 11, 28, 15, 0, 0, tzinfo=timezone.utc)
FROZEN_AT = NOW


def naive(delta_seconds: float = 0) -> str:
    return (NOW + timedelta(seconds=delta_seconds)).strftime("%Y-%m-%d %H:%M:%S")


def findings(result) -> list[tuple[str, str, list[int]]]:
    return [(f["code"], f["severity"], f["job_ids"]) for f in result.json()["findings"]]


def apply_fixes(cli, finding: dict, skip=()) -> None:
    """Run the etlctl commands a finding proposes, in order, as the on-call engineer would."""
    for fix in finding["fix"]:
        words = shlex.split(fix["command"])
        if words[0] != "etlctl" or words[1] in skip:
            continue
        result = cli(*words[1:])
        assert result.exit_code == 0, (fix["command"], result.stderr)


# --- a healthy database ------------------------------------------------------------------


def test_a_healthy_database_has_no_findings(db, cli, frozen, acme):
    db.job("Later", acme, db.integration(acme), next_run=naive(3600))
    db.job("Jira", acme, db.integration(acme), status=running(value="running"), last_run_started_at=naive(-600))
    just_done = db.job("Done", acme, db.integration(acme, "Jira"), status=running(), last_run_started_at=naive(-900))
    assert cli("complete", just_done).exit_code == 0
    db.job("GitHub", acme, db.integration(acme, "GitHub"))
    assert cli("schedule-next").exit_code == 0  # starts GitHub: a fresh queue message, an audit row
    frozen.frozen.tick(10)

    result = cli("doctor")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "no problems found (4 jobs checked)\n", "")
    data = cli("doctor", "--json").json()
    assert (data["healthy"], data["problems"], data["findings"], data["skipped"]) == (True, 0, [], [])


def test_an_empty_database_is_a_note_not_silence(db, cli):
    """No jobs at all is more often the wrong database than a healthy one."""
    result = cli("doctor")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        "[note] No jobs: etl_jobs is empty: there was nothing to check\n"
        "  cause: nothing has written jobs to this database yet, or it is not the ETL database: check --dsn / "
        "ETLCTL_DSN (or PGHOST/PGDATABASE/PGSERVICE)\n"
        "  hint:  etlctl --dsn DSN doctor\n"
        "         # run it against the ETL database (or set ETLCTL_DSN)\n"
        "\n"
        "no problems found (0 jobs checked, 1 note)\n"
    )
    data = cli("doctor", "--json").json()
    assert (data["healthy"], data["notes"], [f["code"] for f in data["findings"]]) == (True, 1, ["no_jobs"])
    # A placeholder is no command: `jq -r '.findings[].fix[].command' | sh` must not run it.
    assert data["findings"][0]["fix"] == [{"command": "", "template": "etlctl --dsn DSN doctor",
                                           "note": "run it against the ETL database (or set ETLCTL_DSN)"}]


# --- 1. Timer keeps retrying ------------------------------------------------------------


def test_timer_keeps_retrying_names_the_phase_and_since_when(db, cli, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme), status=running(), last_run_started_at=naive(-1800))
    frozen.frozen.tick(-600)  # 14:50: the embedding worker reports a phase running (audited)
    assert cli("step", job, "jira_dev_status", "embedding", "running", "--token", "tok-1").exit_code == 0
    frozen.frozen.tick(300)  # 14:55: the run completes anyway
    assert cli("complete", job).exit_code == 0
    for _ in range(2):  # checks 1 and 2 fail
        frozen.frozen.tick(30)
        assert cli("sweep").exit_code == 0
    frozen.frozen.tick(20)

    result = cli("doctor")
    assert result.exit_code == 3
    host = db.value("SELECT host FROM etlctl.audit WHERE job_id = %s ORDER BY id LIMIT 1", job)
    assert result.stdout == (
        f"[problem] Timer keeps retrying: job {job} (Jira, tenant acme) FINISHED for 1m20s (since 2026-11-28 14:55:00): "
        "2 of 5 checks failed; check 3 at 14:57:00 (in 40s)\n"
        f"  cause: jira_dev_status.embedding still running since 14:50:00 (6m20s ago; set by `etlctl step` on {host} "
        "as postgres); its worker never reported it finished (did it get the completion message with last_item=True "
        "and last_job_item=True?)\n"
        f"  fix:   etlctl step {job} jira_dev_status embedding finished --token tok-1\n"
        "         # only if the embedding worker really finished jira_dev_status (check its logs); then the next check "
        "looks again (why shows what is left)\n"
        f"         etlctl reset {job} --force\n"
        "         # warning: overrides the check; what did not finish is not redone until the next run\n"
        "\n"
        "1 problem (1 job checked)\n"
    )
    # The fix it proposes works: the next check passes, the cool-down runs, the job is READY.
    finding = cli("doctor", "--json").json()["findings"][0]
    apply_fixes(cli, finding, skip=("reset",))
    frozen.frozen.tick(40)
    assert cli("sweep").exit_code == 0
    frozen.frozen.tick(30)
    assert cli("sweep").exit_code == 0
    assert db.status(job)["overall"] == "READY"
    assert cli("doctor").exit_code == 0


def test_a_job_just_finished_is_not_retrying_yet(db, cli, frozen, acme):
    job = db.job("Jira", acme, status=finished(jira_dev_status__embedding="running"), last_run_finished_at=naive(-25))
    assert cli("doctor").exit_code == 0  # the first check is due 30 s after it finished
    frozen.frozen.tick(6)
    assert findings(cli("doctor", "--json")) == [("timer_retrying", "problem", [job])]


def test_a_failed_phase_says_waiting_cannot_help(db, cli, frozen, acme):
    job = db.job("Jira", acme, status=finished(jira_dev_status__transform="failed"), last_run_finished_at=naive(-60),
                 last_updated_at=naive(-45))
    finding = cli("doctor", "--json").json()["findings"][0]
    assert finding["code"] == "timer_retrying"
    assert finding["cause"] == ("jira_dev_status.transform failed (no change to the job since 14:59:15, 45s ago): "
                                "a failed phase cannot finish by waiting, the reset gives up")
    assert [f["command"] for f in finding["fix"]] == [f"etlctl reset {job} --force"]


# --- 2. Stuck on FINISHED ---------------------------------------------------------------


def test_stuck_on_finished_with_no_reset_pending(db, cli, frozen, acme):
    # The existing embedding worker finishes jobs without reset keys; nothing ran the reset flow since.
    job = db.job("Jira", acme, status=finished(), last_run_finished_at=naive(-630), last_updated_at=naive(-630))
    assert cli("doctor").exit_code == 0  # 10m30s: exactly delay + backoff + cool-down, not longer
    frozen.frozen.tick(1)
    result = cli("doctor")
    assert result.exit_code == 3
    assert result.stdout == (
        f"[problem] Stuck on FINISHED: job {job} (Jira, tenant acme) FINISHED for 10m31s (since 2026-11-28 14:49:30), "
        "longer than the whole reset flow takes (10m30s), with no reset pending\n"
        "  cause: every step is finished, but nothing runs the reset flow (`etlctl sweep` from cron, or the UI)\n"
        f"  fix:   etlctl reset {job}\n"
        "         # the check passes: resets it to READY\n"
        "         etlctl cron --install\n"
        "         # runs schedule-next and sweep every minute, so it does not happen again\n"
        "\n"
        "1 problem (1 job checked)\n"
    )
    assert cli("reset", job).exit_code == 0
    assert cli("doctor").exit_code == 0


def test_the_stuck_threshold_follows_the_timing_flags_and_env(db, cli, frozen, acme):
    job = db.job("Jira", acme, status=finished(), last_run_finished_at=naive(-40))
    assert cli("doctor").exit_code == 0
    short = ("--delay", "10", "--backoff", "10", "--cooldown", "10")  # patience 30 s
    assert findings(cli("doctor", "--json", *short)) == [("stuck_finished", "problem", [job])]
    assert cli("doctor", env={"ETLCTL_DELAY": "5", "ETLCTL_BACKOFF": "5", "ETLCTL_COOLDOWN": "5"}).exit_code == 3


def test_stuck_on_finished_after_the_reset_gave_up(db, cli, frozen, acme):
    job = db.job("Jira", acme, status=finished(jira_dev_status__embedding="running"), last_run_finished_at=naive(-60))
    assert cli("wait-and-reset", job).exit_code == 3  # gives up after 5 checks (frozen time moves on)
    result = cli("doctor")
    assert result.exit_code == 3
    assert result.stdout == (
        f"[problem] Stuck on FINISHED: job {job} (Jira, tenant acme) FINISHED for 10m30s (since 2026-11-28 14:59:00): "
        "the reset gave up at 15:09 and waits for a person\n"
        "  cause: jira_dev_status.embedding still running (set outside etlctl: when is not recorded)\n"
        f"  fix:   etlctl step {job} jira_dev_status embedding finished --token tok-1\n"
        "         # only if the embedding worker really finished jira_dev_status (check its logs); "
        "then reset the job (the check passes once every step has finished)\n"
        f"         etlctl reset {job} --force\n"
        "         # warning: overrides the check; what did not finish is not redone until the next run\n"
        "\n"
        "1 problem (1 job checked)\n"
    )
    forced = cli("reset", job, "--force")
    assert forced.exit_code == 0 and "warning: forced reset" in forced.stderr
    assert cli("doctor").exit_code == 0


def test_a_gave_up_job_whose_steps_finished_since_needs_only_a_reset(db, cli, frozen, acme):
    status = finished()
    status.update(reset_stage="gave_up", reset_gave_up_at=(NOW - timedelta(minutes=3)).isoformat(), reset_attempt=4)
    job = db.job("Jira", acme, status=status, last_run_finished_at=naive(-900),
                 error_message="gave up after 5 checks: jira_dev_status.embedding: still running")
    finding = cli("doctor", "--json").json()["findings"][0]
    assert (finding["code"], finding["summary"]) == (
        "stuck_finished", f"job {job} (Jira, tenant acme) FINISHED for 15m (since 2026-11-28 14:45:00): the reset gave "
                          "up at 14:57 and waits for a person")
    assert finding["cause"] == ("every step has finished since the flow gave up (gave up after 5 checks: "
                                "jira_dev_status.embedding: still running)")
    assert [f["command"] for f in finding["fix"]] == [f"etlctl reset {job}"]
    apply_fixes(cli, finding)
    assert db.status(job)["overall"] == "READY"


def test_a_pending_reset_nobody_acts_on_is_stuck(db, cli, frozen, acme):
    job = db.job("Jira", acme, status=running(), last_run_started_at=naive(-3600))
    assert cli("complete", job).exit_code == 0  # first check due at 15:00:30
    frozen.frozen.tick(30 + 630 + 1)
    finding = cli("doctor", "--json").json()["findings"][0]
    assert finding["summary"] == (f"job {job} (Jira, tenant acme) FINISHED for 11m01s (since 2026-11-28 15:00:00): "
                                  "its reset was due at 2026-11-28 15:00:30 (10m31s ago) and nothing has acted on it")


# --- 3. Next job not starting -----------------------------------------------------------


def test_a_due_job_nobody_started(db, cli, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme), next_run=naive(-300))
    assert cli("doctor").exit_code == 0  # due 5 minutes ago: a tick every minute may still come
    frozen.frozen.tick(1)
    result = cli("doctor")
    assert result.exit_code == 3
    assert result.stdout == (
        f"[problem] Next job not starting: job {job} (Jira, tenant acme) READY, due since 2026-11-28 14:55:00 "
        "(5m01s ago), not started\n"
        "  cause: nothing started it: `etlctl schedule-next` is not running (cron), or it fails (see its log)\n"
        "  fix:   etlctl schedule-next\n"
        "         # starts the due jobs now\n"
        "         etlctl cron --install\n"
        "         # runs schedule-next and sweep every minute\n"
        "\n"
        "1 problem (1 job checked)\n"
    )
    apply_fixes(cli, cli("doctor", "--json").json()["findings"][0], skip=("cron",))
    assert db.status(job)["overall"] == "RUNNING"
    assert cli("doctor").exit_code == 0


def test_inactive_jobs_integrations_and_tenants_are_notes(db, cli, frozen):
    on, off = db.tenant("on"), db.tenant("off", active=False)
    job = db.job("Jira", on, db.integration(on), active=False, next_run=naive(-3600))
    integration = db.integration(on, "GitHub", active=False)
    behind_integration = db.job("GitHub", on, integration, next_run=naive(-3600))
    behind_tenant = db.job("Jira", off, db.integration(off), next_run=naive(-3600))
    db.job("Later", off, None, next_run=naive(3600))  # not due yet: nothing to say
    result = cli("doctor")
    assert result.exit_code == 0  # notes are not problems: deactivating a tenant is a normal thing to do
    assert result.stdout.splitlines()[0] == (
        f"[note] Next job not starting: job {job} (Jira, tenant on) READY, due since 2026-11-28 14:00:00 (1h ago), "
        "will not start: job inactive")
    assert result.stdout.splitlines()[-1] == "no problems found (4 jobs checked, 3 notes)"
    notes = {f["job_ids"][0]: f for f in cli("doctor", "--json").json()["findings"]}
    assert set(notes) == {job, behind_integration, behind_tenant}
    assert notes[behind_integration]["summary"].endswith(f"will not start: integration {integration} inactive")
    assert [f["command"] for f in notes[behind_tenant]["fix"]] == [
        f"psql -c 'UPDATE tenants SET active = true WHERE id = {off}'"]


def test_next_run_further_away_than_the_schedule_interval(db, cli, frozen, acme):
    # Written as New York wall-clock time into a database etlctl reads as UTC: 5 hours off.
    job = db.job("Jira", acme, db.integration(acme), schedule_interval_minutes=360, next_run=naive(6 * 3600 + 5 * 3600))
    fine = db.job("GitHub", acme, db.integration(acme, "GitHub"), schedule_interval_minutes=360, next_run=naive(6 * 3600))
    finding = cli("doctor", "--json").json()["findings"]
    assert [(f["code"], f["job_ids"]) for f in finding] == [("not_starting", [job])]
    assert finding[0]["summary"] == (f"job {job} (Jira, tenant acme) READY: next_run is 2026-11-29 02:00:00, 11h away, "
                                     "but it runs every 6h")
    assert fine not in finding[0]["job_ids"]


def test_a_job_blocked_by_a_stuck_job_is_a_problem_and_by_a_healthy_run_a_note(db, cli, frozen, acme):
    stuck_on = db.integration(acme)
    stuck = db.job("Jira", acme, stuck_on, status=finished(jira_dev_status__embedding="running"),
                   last_run_finished_at=naive(-3600), last_run_started_at=naive(-7200))
    blocked = db.job("Jira 2", acme, stuck_on, next_run=naive(-1800))
    busy_on = db.integration(acme)
    db.job("Busy", acme, busy_on, status=running(value="running"), last_run_started_at=naive(-900))
    waiting = db.job("Waits", acme, busy_on, next_run=naive(-600))
    data = cli("doctor", "--json").json()
    by_job = {f["job_ids"][0]: f for f in data["findings"] if f["code"] == "not_starting"}
    assert (by_job[blocked]["severity"], by_job[blocked]["summary"]) == (
        "problem", f"job {blocked} (Jira 2, tenant acme) READY, due since 2026-11-28 14:30:00 (30m ago), blocked: "
                   f"integration {stuck_on} busy with job {stuck} (FINISHED for 1h)")
    assert by_job[blocked]["fix"][0]["command"] == f"etlctl why {stuck}"
    assert (by_job[waiting]["severity"], by_job[waiting]["summary"]) == (
        "note", f"job {waiting} (Waits, tenant acme) READY, due since 2026-11-28 14:50:00 (10m ago), waits: "
                f"integration {busy_on} busy with job {waiting - 1} (RUNNING for 15m)")


def test_failed_jobs_waiting_for_their_retry_are_notes(db, cli, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme), status={"overall": "FAILED", "token": "t", "steps": {}},
                 error_message="HTTP 502 from Jira", retry_count=2, retry_interval_minutes=15,
                 last_run_finished_at=naive(-600), last_updated_at=naive(-600))
    result = cli("doctor", "--json")
    assert result.exit_code == 0
    [finding] = result.json()["findings"]
    assert (finding["severity"], finding["summary"], finding["cause"]) == (
        "note", f"job {job} (Jira, tenant acme) FAILED, retry at 15:05:00 (in 5m)",
        "its last run failed: HTTP 502 from Jira (retries so far: 2)")


# --- 4. Multiple jobs running -----------------------------------------------------------


def test_multiple_running_jobs_where_the_index_could_not_be_created(db, cli, frozen, acme):
    # A database where migration 0002 was refused: the index is absent and not recorded.
    db.sql("DROP INDEX etlctl_one_running_per_integration")
    db.sql("DELETE FROM etlctl.migrations WHERE name = '0002_one_running_per_integration'")
    integration = db.integration(acme)
    first = db.job("Jira", acme, integration, status=running(token="a"), last_run_started_at=naive(-7200),
                   last_updated_at=naive(-3600))
    second = db.job("Jira 2", acme, integration, status=running(token="b"), last_run_started_at=naive(-600),
                    last_updated_at=naive(-60))
    result = cli("doctor")
    assert result.exit_code == 3
    assert result.stdout == (
        "[problem] Migrations pending: 1 migration not applied: 0002_one_running_per_integration\n"
        "  cause: `etlctl db init` was not run after an upgrade, or a migration was refused\n"
        "  fix:   etlctl db init\n"
        "         # 0002_one_running_per_integration is refused while an integration has more than one RUNNING job: "
        "fix 'Multiple jobs running' first\n"
        "\n"
        "[problem] Partial index missing: the partial unique index etlctl_one_running_per_integration is missing: "
        "nothing stops a second RUNNING job on an integration\n"
        "  cause: migration 0002_one_running_per_integration is not applied\n"
        "  fix:   etlctl db init\n"
        "         # creates it once only one RUNNING job is left per integration\n"
        "\n"
        f"[problem] Multiple jobs running: integration {integration} has 2 RUNNING jobs: {first}, {second}\n"
        "  cause: only one job per integration may run; the database did not refuse the second start because the "
        f"one-RUNNING index is missing. job {first} (Jira): started 2026-11-28 13:00:00, last change 1h ago; "
        f"job {second} (Jira 2): started 2026-11-28 14:50:00, last change 1m ago\n"
        f"  fix:   etlctl reset {first} --force\n"
        f"         # warning: discards job {first}'s run; job {second} (the most recently updated) keeps running\n"
        "         etlctl db init\n"
        "         # creates the index that prevents it, if it is missing\n"
        "\n"
        "3 problems (2 jobs checked)\n"
    )
    apply_fixes(cli, cli("doctor", "--json").json()["findings"][2])
    assert db.value("SELECT to_regclass('etlctl_one_running_per_integration') IS NOT NULL")
    assert cli("doctor").exit_code == 0


# --- the schema, the index, the clock -------------------------------------------------------


def test_an_uninitialised_database_is_a_finding_not_a_crash(blank_db):
    result = Cli(blank_db.dsn)("doctor")
    assert (result.exit_code, result.stderr) == (3, "")
    assert result.stdout == (
        "[problem] Schema not initialised: the database has no etlctl schema, etl_jobs, tenants, integrations\n"
        "  cause: etlctl's schema was never created here (or this is not the ETL database: check --dsn / ETLCTL_DSN)\n"
        f"  fix:   etlctl --dsn 'host={blank_db.server.socket_dir} port={blank_db.server.port} "
        f"dbname={blank_db.name} user=postgres' db init\n"
        "         # creates etlctl's schema; on the existing system's database it only adds etlctl's objects\n"
        "\n"
        "skipped: every other check: the schema is not initialised\n"
        "1 problem (0 jobs checked)\n"
    )


def test_the_existing_systems_database_before_and_after_db_init(blank_db, frozen):
    load_existing_system(blank_db)
    cli = Cli(blank_db.dsn)
    before = cli("doctor", "--json")
    assert (before.exit_code, findings(before)) == (3, [("schema_not_initialised", "problem", [])])
    assert before.json()["findings"][0]["summary"] == "the database has no etlctl schema"
    assert cli("db", "init").exit_code == 0
    rows = snapshot_rows(blank_db)

    after = cli("doctor", "--json")
    assert after.exit_code == 3
    assert findings(after) == [
        ("stuck_finished", "problem", [1]),  # FINISHED at 09:00, no reset pending
        ("not_starting", "problem", [2]),  # READY, due at 12:00, nothing started it
        ("not_starting", "note", [4]),  # its integration and tenant are inactive
        ("malformed_status", "problem", [1]),
        ("malformed_status", "problem", [3]),
        ("malformed_status", "problem", [4]),
    ]
    summaries = [f["summary"] for f in after.json()["findings"] if f["code"] == "malformed_status"]
    assert summaries == [
        "job 1 (Jira, tenant acme), FINISHED: jira_dev_status.embedding: unexpected value null",
        "job 3 (Confluence, tenant acme), RUNNING: it has no steps key",
        "job 4 (Jira, tenant globex), FAILED: steps is a string, not an object",
    ]
    assert snapshot_rows(blank_db) == rows  # reported, never repaired


def test_a_dropped_index_is_reported_with_the_sql_that_recreates_it(db, cli, frozen, acme):
    db.job("Later", acme, db.integration(acme), next_run=naive(3600))  # a healthy job: no "No jobs" note
    db.sql("DROP INDEX etlctl_one_running_per_integration")
    [finding] = cli("doctor", "--json").json()["findings"]
    assert (finding["code"], finding["cause"]) == (
        "index_missing", "it was dropped (or its build failed) after its migration was applied")
    command = finding["fix"][0]["command"]
    assert command.startswith('psql -c "CREATE UNIQUE INDEX etlctl_one_running_per_integration ON etl_jobs')
    db.sql(shlex.split(command)[2])  # the statement it gives is exact
    assert cli("doctor").exit_code == 0


def test_a_pending_migration_skips_the_checks_that_need_it(db, cli, frozen, acme):
    db.job("Jira", acme, db.integration(acme), next_run=naive(-3600))
    db.sql("DROP FUNCTION etlctl.first_step")  # what 0003 creates, and only the scheduler's queries call
    db.sql("DELETE FROM etlctl.migrations WHERE name = '0003_scheduling'")
    result = cli("doctor")
    assert result.exit_code == 3
    assert "skipped: next job not starting: needs the pending migrations (`etlctl db init`)\n" in result.stdout
    assert findings(cli("doctor", "--json")) == [("migrations_pending", "problem", [])]
    assert cli("db", "init").exit_code == 0
    assert findings(cli("doctor", "--json")) == [("not_starting", "problem", [1])]


@pytest.mark.parametrize(("offset", "expected"), [
    (30, r"this host's clock is (29\.9|30\.\d)s ahead of the database server's \(limit 5s\)"),
    (-30, r"this host's clock is (29\.9|30\.\d)s behind the database server's \(limit 5s\)"),
    (3, None),
])
def test_clock_skew_over_5s(db, cli, monkeypatch, offset, expected):
    monkeypatch.setattr(doctor, "host_clock", lambda: time.time() + offset)
    later = db.job("Jira")  # a healthy job (not due yet), so the only finding can be the skew
    db.sql("UPDATE etl_jobs SET next_run = now()::timestamp + interval '1 hour' WHERE id = %s", later)
    data = cli("doctor", "--json").json()
    if expected is None:
        assert data["findings"] == []
        return
    [finding] = data["findings"]
    assert finding["code"] == "clock_skew" and re.fullmatch(expected, finding["summary"]), finding["summary"]


# --- the queue and long runs ---------------------------------------------------------------


def test_queue_messages_pending_too_long(db, cli, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme))
    started = cli("schedule-next", "--json").json()["started"][0]
    frozen.frozen.tick(15 * 60)
    assert cli("doctor").exit_code == 0  # 15 minutes unclaimed: not yet "too long"
    frozen.frozen.tick(1)
    [finding] = cli("doctor", "--json").json()["findings"]
    assert (finding["code"], finding["job_ids"], finding["summary"]) == (
        "queue_stale", [job], f"1 message of current runs never published or claimed; the oldest, "
                              f"{started['queue_id']} (job {job} jira_projects_and_issue_types extraction, to "
                              f"extraction_queue_premium), was queued 15m01s ago")
    assert finding["cause"].startswith("nothing publishes them: no `etlctl relay` runs")
    assert [f["command"] for f in finding["fix"]] == ["etlctl relay", "etlctl queue ls --pending"]
    # A relay that tried and was refused: its last error is the cause.
    db.sql("UPDATE etlctl.queue SET attempts = 2, refusals = 2, last_attempt_at = %s, "
           "last_error = 'nacked by the broker' WHERE id = %s", frozen.sql_now() - timedelta(minutes=1),
           started["queue_id"])
    [finding] = cli("doctor", "--json").json()["findings"]
    assert finding["cause"] == (f"a relay tries, but the broker does not take them: message {started['queue_id']}'s "
                                "last attempt (1m ago, attempt 2) ended with: nacked by the broker")
    # The run is abandoned: its message now belongs to a run that is over.
    assert cli("reset", job, "--force").exit_code == 0
    [finding] = cli("doctor", "--json").json()["findings"]
    assert finding["summary"] == "1 message of runs that are over (or of deleted jobs) never done"
    assert [f["command"] for f in finding["fix"]] == [f"etlctl queue done {started['queue_id']}"]
    apply_fixes(cli, finding)
    assert cli("doctor").exit_code == 0


def _start(cli, db, job):
    db.sql("UPDATE etl_jobs SET next_run = NULL WHERE id = %s", job)
    assert cli("schedule-next").exit_code == 0
    claimed = cli("queue", "claim", "--worker", "extraction-1", "--json").json()
    assert cli("queue", "done", claimed["id"]).exit_code == 0


def _past_run(cli, db, frozen, job, minutes):
    _start(cli, db, job)
    frozen.frozen.tick(minutes * 60)
    assert cli("complete", job).exit_code == 0
    assert cli("reset", job, "--force").exit_code == 0


def test_running_far_longer_than_its_own_history(db, cli, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme))
    for minutes in (30, 50, 40):
        _past_run(cli, db, frozen, job, minutes)
    _start(cli, db, job)
    frozen.frozen.tick(120 * 60)  # 3 x the median (40m) exactly: not yet
    assert cli("doctor").exit_code == 0
    frozen.frozen.tick(60)
    [finding] = cli("doctor", "--json").json()["findings"]
    start = (NOW + timedelta(minutes=120)).strftime("%Y-%m-%d %H:%M:%S")
    assert (finding["code"], finding["summary"]) == (
        "long_running", f"job {job} (Jira, tenant acme) RUNNING for 2h01m (since {start})")
    assert finding["cause"].startswith("its last 3 runs took 40m (median), 50m at most; reported past 2h; still going: "
                                       "jira_projects_and_issue_types not started (all phases idle)")
    assert [f["command"] for f in finding["fix"]] == [f"etlctl why {job}", f"etlctl reset {job} --force"]


def test_a_running_job_without_history_is_long_only_after_a_day(db, cli, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme), status=running(value="running"), last_run_started_at=naive(-86400))
    assert cli("doctor").exit_code == 0
    frozen.frozen.tick(1)
    [finding] = cli("doctor", "--json").json()["findings"]
    assert (finding["code"], finding["job_ids"]) == ("long_running", [job])
    assert finding["cause"].startswith("no completed run in the audit to compare with; reported past 1d")


def test_json_findings_have_a_stable_shape(db, cli, frozen, acme):
    db.job("Jira", acme, status=finished(), last_run_finished_at=naive(-3600))
    data = cli("doctor", "--json").json()
    assert set(data) == {"healthy", "problems", "notes", "now", "jobs_checked", "skipped", "findings"}
    assert data["now"] == "2026-11-28T15:00:00+00:00"
    [finding] = data["findings"]
    assert set(finding) == {"code", "severity", "title", "job_ids", "summary", "cause", "fix", "details"}
    assert all(set(fix) == {"command", "note"} for fix in finding["fix"])


# --- reading only the jobs that can have a finding ---------------------------------------------


JOB_FINDINGS = {"multiple_running", "stuck_finished", "timer_retrying", "not_starting", "long_running", "malformed_status"}


def naive_iso(seconds: float) -> str:
    return (NOW + timedelta(seconds=seconds)).isoformat()


def nested_list(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def random_status(rng, overall: str) -> dict:
    phases = ("extraction", "transform", "embedding")
    value = rng.choice(["finished", "finished", "idle", "running", "failed"])
    steps = {s: {"order": n, **{p: value for p in phases}} for n, s in enumerate(
        ["jira_projects_and_issue_types", "jira_statuses_and_relationships", "jira_issues_with_changelogs", "jira_dev_status"], 1)}
    mess = rng.random()
    if mess < 0.05:
        steps["jira_dev_status"]["embedding"] = rng.choice([None, 1, "done", {"x": 1}])
    elif mess < 0.08:
        steps["jira_dev_status"] = rng.choice(["finished", None, [1]])
    elif mess < 0.10:
        steps = rng.choice(["corrupted", None, []])
    status = {"overall": overall, "token": f"t{rng.randrange(1000)}", "steps": steps}
    if rng.random() < 0.06:
        del status["steps"]
    reset = rng.random()
    if reset < 0.3:
        status.update(reset_stage=rng.choice(["check", "cooldown"]), reset_attempt=rng.randrange(5),
                      reset_deadline=(NOW + timedelta(seconds=rng.choice([-7200, -60, 30, 900]))).isoformat())
    elif reset < 0.4:
        status.update(reset_stage="gave_up", reset_deadline=None,
                      reset_gave_up_at=(NOW + timedelta(seconds=rng.choice([-86400, -60]))).isoformat())
    elif reset < 0.45:
        status.update(rng.choice([{"reset_deadline": "soon"}, {"reset_attempt": -1}, {"reset_attempt": 2.5},
                                  {"reset_stage": "later"}, {"reset_deadline": "2026-11-28T10:00:00"},
                                  {"reset_attempt": 0, "reset_deadline": None},
                                  # checked on read since issue 11: out of range, or of the wrong type
                                  {"reset_attempt": 3000000000, "reset_deadline": (NOW - timedelta(seconds=60)).isoformat()},
                                  {"reset_deadline": (NOW + timedelta(days=2)).isoformat()},
                                  {"reset_deadline": "9999-12-31T00:00:00+00:00"}, {"token": 7},
                                  {"reset_token": ["x"]}, {"token": "t" * 300},
                                  {"reset_stage": "gave_up", "reset_gave_up_at": "soon"},
                                  {"ui": nested_list(70)}, {"ui": "x" * (1024 * 1024 + 10)}]))
    return status


def test_reading_only_candidate_jobs_finds_what_reading_every_job_finds(db, frozen):
    """doctor_candidates (SQL) chooses which jobs doctor reads; it must never leave out one with a finding."""
    import random

    from etlctl.store import settings as config
    from etlctl.store import connection as etl_db
    from etlctl.core import lifecycle

    rng = random.Random(20261128)
    db.sql("DROP INDEX etlctl_one_running_per_integration")  # so that doubled RUNNING jobs can exist too
    db.sql("INSERT INTO etlctl.job_kinds (name) VALUES ('confluence')")  # a kind without steps: nothing to queue
    tenants = [db.tenant(f"t{n}", active=rng.random() > 0.15) for n in range(6)]
    integrations = [(t, db.integration(t, rng.choice(["Jira", "Jira", "Confluence"]), active=rng.random() > 0.15))
                    for t in tenants for _ in range(8)]
    for n in range(400):
        tenant, integration = rng.choice(integrations)
        if rng.random() < 0.1:
            integration = None
        overall = rng.choice(["READY", "READY", "RUNNING", "FINISHED", "FAILED", "RATE_LIMIT_REACHED"])
        db.job(f"Jira {n}" if rng.random() < 0.9 else f"Other {n}", tenant, integration,
               status=random_status(rng, overall), active=rng.random() > 0.1,
               next_run=rng.choice([None, naive(-86400), naive(-600), naive(-60), naive(600), naive(86400 * 3)]),
               schedule_interval_minutes=rng.choice([0, 60, 360]),
               retry_interval_minutes=rng.choice([1, 15]),
               last_run_started_at=rng.choice([None, naive(-90000), naive(-7200), naive(-600)]),
               last_run_finished_at=rng.choice([None, naive(-7200), naive(-1200), naive(-20)]),
               last_updated_at=rng.choice([naive(-7200), naive(-200), naive(-5)]))

    # And, every time, one job of each value etlctl checks on read since issue 11 (the random draw may miss one).
    checked = {
        "reset_attempt is a number (3000000000)": {"reset_attempt": 3000000000, "reset_deadline": naive_iso(-60)},
        "further ahead than the longest wait": {"reset_stage": "check", "reset_deadline": naive_iso(2 * 86400)},
        "token is a number (7)": {"token": 7},
        "reset_token is an array": {"reset_token": ["x"]},
        "reset_gave_up_at 'soon'": {"reset_stage": "gave_up", "reset_gave_up_at": "soon"},
        "ui: not read (nested more than 64 levels deep)": {"ui": nested_list(70)},
        "ui: not read (1.0 MB long": {"ui": "x" * (1024 * 1024 + 10)},
    }
    # READY, active, next_run within its interval, of a known kind: only the checked value makes it a candidate.
    tenant = db.tenant("checked")
    for n, extra in enumerate(checked.values()):
        db.job(f"Checked {n}", tenant, db.integration(tenant, "Jira"),
               status={"overall": "READY", "steps": {}, **extra}, next_run=naive(600))

    timings = lifecycle.Timings()
    with etl_db.connect(config.ConnectionSettings(dsn=db.dsn), "doctor") as session:
        from_candidates = [f for f in doctor.run(session, timings).findings if f.code in JOB_FINDINGS]
        from_every_job = doctor.examine(session, timings, None, session.all("running_conflicts"), [])
        counted = sorted(f.job.id for f in doctor.malformed_jobs(session, None))  # what metrics counts
    assert counted == sorted(j for f in from_every_job if f.code == "malformed_status" for j in f.job_ids)
    malformed = " | ".join(f.summary for f in from_candidates if f.code == "malformed_status")
    assert [text for text in checked if text not in malformed] == []

    def key(finding):
        return (finding.code, finding.severity, finding.job_ids, finding.summary)

    assert sorted(map(key, from_candidates)) == sorted(map(key, from_every_job))
    assert {f.code for f in from_every_job} == JOB_FINDINGS  # the random jobs exercise every kind of job finding
    assert len(from_every_job) > 50


def test_a_finished_job_with_malformed_steps_names_the_cause(db, cli, frozen, acme):
    job = db.job("Other", acme, None, status={"overall": "FINISHED", "token": "t", "steps": "corrupted"},
                 last_run_finished_at=naive(-3600))
    causes = [f["cause"] for f in cli("doctor", "--json").json()["findings"] if f["job_ids"] == [job]]
    assert causes and all(c.strip() for c in causes)
    assert any("steps is a string, not an object" in c for c in causes), causes


def test_a_malformed_document_names_etlctl_when_its_write_was_the_latest(db, cli, frozen, acme):
    """A document without steps, completed by etlctl: doctor never blames "another program" for etlctl's write."""
    job = db.job("Jira", acme, None, status={"overall": "RUNNING", "token": "t"}, last_updated_at=naive(-600))
    [before] = [f for f in cli("doctor", "--json").json()["findings"] if f["code"] == "malformed_status"]
    assert before["cause"] == ("another program wrote it (etlctl has never changed this job, and never repairs a "
                               "document): find the writer")
    assert cli("complete", job, "--token", "t").exit_code == 0
    frozen.frozen.tick(60)
    [after] = [f for f in cli("doctor", "--json").json()["findings"] if f["code"] == "malformed_status"]
    assert after["summary"] == f"job {job} (Jira, tenant acme), FINISHED: it has no steps key"
    assert after["cause"] == (
        "the latest recorded change to the job is etlctl's own `etlctl complete` at 2026-11-28 15:00:00, which "
        "keeps what it does not own as it finds it (etlctl never repairs a document): it was already so, or a worker "
        "changed it since without recording a time")
    db.sql("UPDATE etl_jobs SET last_updated_at = %s WHERE id = %s", naive(+30), job)  # another program's write since
    [later] = [f for f in cli("doctor", "--json").json()["findings"] if f["code"] == "malformed_status"]
    assert later["cause"].startswith("another program wrote the job after etlctl's latest change (`etlctl complete` at ")


def test_a_job_whose_kind_defines_no_message_is_a_note_so_a_fresh_install_is_healthy(db, cli, frozen, acme):
    """WEX Fabric and WEX AD as seeded, and a job of no kind: etlctl never starts them on purpose, nothing
    to fix, so doctor exits 0 and says so in a note."""
    job = db.job("WEX Fabric", acme, None)
    kindless = db.job("Confluence", acme, None)
    result = cli("doctor")
    assert result.exit_code == 0, result.stdout
    assert result.stdout.splitlines()[-1] == "no problems found (2 jobs checked, 2 notes)"
    found = {f["job_ids"][0]: f for f in cli("doctor", "--json").json()["findings"]}
    assert {(f["severity"], f["details"]["blocked_by"]) for f in found.values()} == {("note", "no_message")}
    assert found[job]["summary"] == (f"job {job} (WEX Fabric, tenant acme) READY: etlctl never starts it: kind wex "
                                     "fabric defines no message (no worker takes its runs): never started")
    assert found[kindless]["summary"] == (f"job {kindless} (Confluence, tenant acme) READY: etlctl never starts it: "
                                          "no job kind matches its name or its provider: no message to queue, never started")
