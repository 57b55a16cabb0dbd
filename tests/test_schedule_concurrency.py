"""Many schedulers, one result: proven from the audit log, under real concurrency."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict

import psycopg
import pytest

from tests.helpers import REPO, Cli, etlctl_process, wait_until

STARTABLE = ("READY", "FAILED", "RATE_LIMIT_REACHED")


def seed_many(db, rng, tenants=20, integrations=200, jobs_each=3):
    """200 integrations x 3 Jira jobs over 20 tenants; a few inactive at every level."""
    tenant_ids = [db.tenant(f"tenant {t}", active=(t != 0)) for t in range(tenants)]
    inactive = set()
    rows = []
    for n in range(integrations):
        tenant = tenant_ids[n % tenants]
        integration_on = n % 20 != 7
        integration = db.integration(tenant, "Jira", active=integration_on)
        for k in range(jobs_each):
            job_on = rng.random() > 0.05
            rows.append((f"Jira {n}-{k}", tenant, integration, job_on, rng.uniform(-30, 20)))
            if not (job_on and integration_on and tenant != tenant_ids[0]):
                inactive.add(f"Jira {n}-{k}")
    db.sql("""INSERT INTO etl_jobs (job_name, tenant_id, integration_id, active, schedule_interval_minutes, next_run)
              SELECT r.name, r.tenant, r.integration, r.active, 0, now()::timestamp + make_interval(secs => r.offset_s)
              FROM jsonb_to_recordset(%s::jsonb) AS r(name text, tenant int, integration int, active bool, offset_s float)""",
           __import__("json").dumps([{"name": a, "tenant": b, "integration": c, "active": d, "offset_s": e}
                                     for a, b, c, d, e in rows]))
    return {r["id"] for r in db.sql("SELECT id FROM etl_jobs WHERE job_name = ANY(%s)", list(inactive))}


def check_invariants(db, inactive_jobs):
    events = db.sql("""SELECT a.id, a.job_id, a.from_state, a.to_state, a.token, j.integration_id
                       FROM etlctl.audit a JOIN etl_jobs j ON j.id = a.job_id ORDER BY a.id""")
    starts = [e for e in events if e["to_state"] == "RUNNING" and e["from_state"] in STARTABLE]
    assert starts, "nothing was ever started: the test proves nothing"

    # 1. No integration ever has two overlapping in-flight intervals (replayed in commit-consistent id order).
    in_flight = defaultdict(set)
    for e in events:
        group = e["integration_id"]
        if e in starts:
            assert not in_flight[group] - {e["job_id"]}, f"integration {group}: {e['job_id']} started while {in_flight[group]} in flight"
            in_flight[group].add(e["job_id"])
        elif e["to_state"] == "READY":
            in_flight[group].discard(e["job_id"])

    # 2. Every start has exactly one queue row for its first step, and every first-step row has a start.
    queued = defaultdict(int)
    for row in db.sql("SELECT token FROM etlctl.queue WHERE step = 'jira_projects_and_issue_types'"):
        queued[row["token"]] += 1
    assert {e["token"]: 1 for e in starts} == dict(queued)

    # 3. No job starts twice in one due window: between two starts there is a reset.
    open_run = {}
    for e in events:
        if e in starts:
            assert e["job_id"] not in open_run, f"job {e['job_id']} started twice without a reset"
            open_run[e["job_id"]] = e["token"]
        elif e["to_state"] == "READY":
            open_run.pop(e["job_id"], None)

    # 4. Inactive jobs, integrations and tenants never start.
    assert not {e["job_id"] for e in starts} & inactive_jobs
    return len(starts)


@pytest.mark.slow
def test_eight_schedulers_with_workers_and_resets(db, tmp_path):
    rng = random.Random(20261128)
    inactive = seed_many(db, rng)
    stopfile = tmp_path / "stop"
    start = time.time() + 2.0

    def spawn(mode, rounds="0"):
        return subprocess.Popen([sys.executable, "-m", "tests.workers", mode, db.dsn, rounds, str(start), str(stopfile)],
                                cwd=REPO, stderr=subprocess.PIPE, text=True)

    helpers = [spawn("sim-worker"), spawn("sim-worker"), spawn("sweeper")]
    schedulers = [spawn("scheduler", "200") for _ in range(8)]
    try:
        for proc in schedulers:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
    finally:
        stopfile.touch()
        for proc in helpers:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    runs = check_invariants(db, inactive)
    print(f"{runs} runs started")
    assert runs > 600  # jobs went round several times while the schedulers ran


def test_two_ticks_race_for_one_integration_one_starts_the_other_skips(db):
    """Scripted: a tick holds the integration (as a concurrent tick's claim does); the other starts nothing."""
    tenant = db.tenant("acme")
    integration = db.integration(tenant)
    a = db.job("Jira A", tenant, integration)
    b = db.job("Jira B", tenant, integration)
    cli = Cli(db.dsn)
    with psycopg.connect(db.dsn) as other_tick:
        other_tick.execute("SELECT id FROM integrations WHERE id = %s FOR NO KEY UPDATE", (integration,))
        skipped = cli("schedule-next", "--json", "--explain")
        assert skipped.exit_code == 0
        assert skipped.json()["started"] == []
        assert {r["job_id"]: r["reason"] for r in skipped.json()["not_started"]} == {
            a: "due, but not started this tick (limit reached, or another scheduler holds its integration)",
            b: "due, but not started this tick (limit reached, or another scheduler holds its integration)",
        }
        other_tick.rollback()
    winner = cli("schedule-next", "--json")
    assert winner.exit_code == 0 and [r["job_id"] for r in winner.json()["started"]] == [a]
    assert cli("schedule-next", "--json").json()["started"] == []


def etlctl_sessions(db, where: str = "true") -> int:
    return db.value(f"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'etlctl' AND {where}")


def test_the_unique_index_is_the_backstop_against_other_writers(db):
    """Another program starts job B while a tick starts job A of the same integration: the index refuses
    the second RUNNING job, the tick reports it skipped and exits 0."""
    tenant = db.tenant("acme")
    integration = db.integration(tenant)
    a = db.job("Jira A", tenant, integration)
    b = db.job("Jira B", tenant, integration)
    with psycopg.connect(db.dsn) as legacy:
        legacy.execute("UPDATE etl_jobs SET status = status || '{\"overall\": \"RUNNING\", \"token\": \"legacy\"}' "
                       "WHERE id = %s", (b,))
        tick = etlctl_process(["schedule-next", "--json"], db.dsn)
        assert wait_until(lambda: etlctl_sessions(db, "wait_event_type = 'Lock'")), "the tick never reached the index"
        legacy.commit()
    out, err = tick.communicate(timeout=30)
    assert tick.returncode == 0, err
    import json

    result = json.loads(out)
    assert result["started"] == []
    assert result["skipped"] == [{"integration_id": integration, "reason": "another scheduler started a job on it first"}]
    assert db.status(a)["overall"] == "READY" and db.status(b)["overall"] == "RUNNING"
    assert db.value("SELECT count(*) FROM etlctl.queue") == 0


@pytest.mark.slow
def test_kill_9_mid_tick_never_leaves_a_running_job_without_its_queue_row(db):
    seed = int(os.environ.get("ETLCTL_TEST_SEED", random.randrange(2**32)))
    print(f"seed {seed}: ETLCTL_TEST_SEED={seed} replays this run")  # pytest shows it when the test fails
    rng = random.Random(seed)
    tenant = db.tenant("acme")
    db.sql("""INSERT INTO integrations (provider, type, tenant_id) SELECT 'Jira', 'Data', %s FROM generate_series(1, 3000)""", tenant)
    db.sql("""INSERT INTO etl_jobs (job_name, tenant_id, integration_id)
              SELECT 'Jira ' || i.id, i.tenant_id, i.id FROM integrations i""")
    mid_statement = 0
    for round_ in range(12):
        proc = etlctl_process(["schedule-next"], db.dsn)
        if round_ % 2:
            # Kill while the server is running one of the tick's statements.
            active = wait_until(lambda: etlctl_sessions(db, "state = 'active' AND query LIKE '%etl_jobs%'"), every=0.002)
            mid_statement += active and proc.poll() is None
        else:
            time.sleep(rng.uniform(0.1, 1.0))  # anywhere: start-up, claim, start, commit, exit
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        # The killed tick's server process finishes the statement it was running (then rolls back, or
        # commits a COMMIT that reached it) before it notices: wait for that, or the reset below races it.
        assert wait_until(lambda: not etlctl_sessions(db), every=0.002), "a killed tick's server process is still there"
        running = {r["id"]: r["token"] for r in db.sql(
            "SELECT id, status->>'token' AS token FROM etl_jobs WHERE status->>'overall' = 'RUNNING'")}
        queued = {r["job_id"]: r["token"] for r in db.sql("SELECT job_id, token FROM etlctl.queue WHERE done_at IS NULL")}
        assert running == queued
        # Put them back for the next round, as a reset would.
        db.sql("UPDATE etl_jobs SET status = '{\"overall\": \"READY\", \"steps\": {}}'")
        db.sql("UPDATE etlctl.queue SET done_at = now() WHERE done_at IS NULL")
    assert mid_statement >= 4, "too few ticks were killed mid-statement: the test proved little"
