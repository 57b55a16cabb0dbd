"""Processes killed or interrupted mid-flow leave nothing half-written."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from tests.helpers import Cli, etlctl_process, finished, wait_until

FAST = {"ETLCTL_DELAY": "0.1", "ETLCTL_BACKOFF": "0.1,0.2,0.4,0.8", "ETLCTL_COOLDOWN": "0.3"}


def resets_per_token(db, job: int) -> dict:
    rows = db.sql("SELECT token, count(*) AS n FROM etlctl.audit WHERE job_id = %s AND from_state = 'FINISHED' "
                  "AND to_state = 'READY' GROUP BY token", job)
    return {r["token"]: r["n"] for r in rows}


@pytest.mark.slow
def test_kill_9_of_wait_and_reset_at_random_moments(db):
    seed = int(os.environ.get("ETLCTL_TEST_SEED", time.time()))
    print(f"seed {seed}: ETLCTL_TEST_SEED={seed} replays this run")  # pytest shows it when the test fails
    rng = random.Random(seed)
    tenant = db.tenant("acme")
    now = db.value("SELECT now()::timestamp")
    jobs = []
    for i in range(50):
        slow = i % 3 == 0  # a third still have a phase running, finished later by a "worker"
        status = finished(token=f"run-{i}", jira_dev_status__embedding="running" if slow else "finished")
        jobs.append((db.job(f"Jira {i}", tenant, status=status, last_run_finished_at=now), slow))

    def worker_finishes(job):
        time.sleep(rng.uniform(0.0, 1.2))
        db_local = __import__("psycopg").connect(db.dsn, autocommit=True)
        db_local.execute("UPDATE etl_jobs SET status = jsonb_set(status, '{steps,jira_dev_status,embedding}', '\"finished\"') "
                         "WHERE id = %s AND status->>'overall' = 'FINISHED'", (job,))
        db_local.close()

    threads = [threading.Thread(target=worker_finishes, args=(job,)) for job, slow in jobs if slow]
    for t in threads:
        t.start()
    for batch in range(0, len(jobs), 5):  # five at a time: 2 cores
        procs = [(job, etlctl_process(["wait-and-reset", job], db.dsn, FAST)) for job, _ in jobs[batch:batch + 5]]
        deadline = {job: time.monotonic() + rng.uniform(0.1, 1.6) for job, _ in procs}
        for job, proc in sorted(procs, key=lambda p: deadline[p[0]]):
            time.sleep(max(0.0, deadline[job] - time.monotonic()))
            proc.send_signal(signal.SIGKILL)
        for _, proc in procs:
            proc.communicate(timeout=30)
    for t in threads:
        t.join()

    for job, _ in jobs:
        status = db.status(job)
        assert status["overall"] in ("FINISHED", "READY"), (seed, job, status)
        assert all(n <= 1 for n in resets_per_token(db, job).values()), (seed, job)

    # A rerun converges: every job ends READY, reset exactly once for its run.
    cli = Cli(db.dsn, env=FAST)
    for job, _ in jobs:
        if db.status(job)["overall"] == "FINISHED":
            result = cli("wait-and-reset", job)
            if result.exit_code == 3:  # it had given up before the worker finished: a person resets it
                assert "gave up" in result.stderr
                result = cli("reset", job)
            assert result.exit_code == 0, (seed, job, result.stderr)
        assert db.status(job)["overall"] == "READY", (seed, job)
        assert resets_per_token(db, job) == {f"run-{job - jobs[0][0]}": 1}, (seed, job)


@pytest.mark.parametrize(("sig", "code", "name"), [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                    (signal.SIGINT, 130, "interrupted (SIGINT)")])
def test_a_signal_during_a_wait_exits_with_its_code_and_nothing_half_written(db, sig, code, name):
    job = db.job("Jira", status=finished(jira_dev_status__embedding="running"), last_run_finished_at=None)
    proc = etlctl_process(["wait-and-reset", job, "--delay", "30"], db.dsn)
    assert wait_until(lambda: db.status(job).get("reset_stage") == "check"), "the first deadline was never written"
    written = db.row(job)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == code, err
    assert err.splitlines()[-1] == f"etlctl: {name}; nothing half-written"
    assert "" not in err.splitlines()  # no stray blank line before it
    assert db.row(job) == written


def test_a_signal_during_the_countdown_leaves_the_cooldown_to_resume(db):
    job = db.job("Jira", status=finished(), last_run_finished_at=None)
    proc = etlctl_process(["wait-and-reset", job, "--delay", "0", "--cooldown", "60"], db.dsn)
    seen = []
    for line in proc.stderr:  # signal only once the countdown is on screen
        seen.append(line)
        if line.startswith("Job completed. Resetting in"):
            break
    assert seen and seen[-1].startswith("Job completed. Resetting in 60 seconds"), seen
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=20)
    assert proc.returncode == 143, rest
    assert rest.splitlines()[-1] == "etlctl: terminated (SIGTERM); nothing half-written"
    status = db.status(job)
    assert (status["overall"], status["reset_stage"]) == ("FINISHED", "cooldown")
    # Resuming carries on with the same cool-down; it does not start over.
    resumed = Cli(db.dsn)("wait-and-reset", job, "--dry-run", "--json").json()
    assert resumed["action"] == "wait" and resumed["reason"] == "cool-down before the reset"
