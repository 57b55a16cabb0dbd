"""Worker processes for the concurrency tests: `python -m tests.workers MODE ...`.

step  DSN JOB STEP N START   N updates of one step through etlctl's own `step` code
rmw   DSN JOB STEP N START   the same updates as a read-modify-write (the bug etlctl avoids)
scheduler   DSN ROUNDS START STOPFILE   ROUNDS schedule-next ticks, without the tick lock
sim-worker  DSN - - START STOPFILE      finishes RUNNING jobs and completes them, until STOPFILE exists
sweeper     DSN - - START STOPFILE      sweeps with no delays, until STOPFILE exists

Each update flips one phase between running and finished, so every update
changes something and the last N updates leave all three phases finished.
START is a wall-clock time at which all workers begin together.
"""

from __future__ import annotations

import sys
import time

PHASES = ("extraction", "transform", "embedding")


def value_for(k: int) -> str:
    return "running" if (k // 3) % 2 == 0 else "finished"


def run_step(dsn: str, job: int, step: str, n: int) -> None:
    from etlctl.store import settings as config
    from etlctl.store import connection as db
    from etlctl.actions import flow

    with db.connect(config.ConnectionSettings(dsn=dsn, lock_timeout=30), command="step") as session:
        for k in range(n):
            flow.step(session, job, step_name=step, phase=PHASES[k % 3], value=value_for(k), token=None)


def run_rmw(dsn: str, job: int, step: str, n: int) -> None:
    import psycopg
    from psycopg.types.json import Jsonb

    with psycopg.connect(dsn, autocommit=True) as conn:
        for k in range(n):
            status = conn.execute("SELECT status FROM etl_jobs WHERE id = %s", (job,)).fetchone()[0]
            status["steps"][step][PHASES[k % 3]] = value_for(k)
            time.sleep(0.002)  # the window every real read-modify-write has, made visible
            conn.execute("UPDATE etl_jobs SET status = %s WHERE id = %s", (Jsonb(status), job))


def _session(dsn: str, command: str):
    from etlctl.store import settings as config
    from etlctl.store import connection as db

    return db.connect(config.ConnectionSettings(dsn=dsn, lock_timeout=30, statement_timeout=60), command=command)


def run_scheduler(dsn: str, rounds: int, stopfile: str) -> None:
    import random

    from etlctl.actions import schedule as scheduler

    with _session(dsn, "schedule-next") as session:
        for _ in range(rounds):
            scheduler.tick(session, chain_grace=3600, exclusive=False)
            time.sleep(random.uniform(0, 0.01))


def run_sim_worker(dsn: str, stopfile: str) -> None:
    """A worker that finishes every phase of a RUNNING job, then completes it."""
    import os
    import random

    from etlctl.actions import flow
    from etlctl.errors import EtlctlError

    with _session(dsn, "complete") as session:
        while not os.path.exists(stopfile):
            running = session.conn.execute(
                "SELECT id, status->>'token' AS token FROM etl_jobs WHERE status->>'overall' = 'RUNNING' "
                "ORDER BY random() LIMIT 10").fetchall()
            for job in running:
                # Inside the worker: every phase done, for this run only.
                session.conn.execute(
                    "UPDATE etl_jobs SET status = jsonb_set(status, '{steps}', "
                    "(SELECT coalesce(jsonb_object_agg(key, value || "
                    "'{\"extraction\": \"finished\", \"transform\": \"finished\", \"embedding\": \"finished\"}'), '{}') "
                    "FROM jsonb_each(status->'steps'))) "
                    "WHERE id = %s AND status->>'overall' = 'RUNNING' AND status->>'token' = %s", (job["id"], job["token"]))
                try:
                    flow.complete(session, job["id"], token=job["token"], sync_date=None, delay=0)
                except EtlctlError:
                    pass  # reset or restarted meanwhile: a stale token, refused as it should be
            time.sleep(random.uniform(0.005, 0.02))


def run_sweeper(dsn: str, stopfile: str) -> None:
    import os

    from etlctl.actions import flow
    from etlctl.core import lifecycle

    timings = lifecycle.Timings(delay=0, backoff=(0.05,), cooldown=0)
    with _session(dsn, "sweep") as session:
        while not os.path.exists(stopfile):
            flow.sweep(session, timings)
            time.sleep(0.02)


if __name__ == "__main__":
    mode, dsn = sys.argv[1:3]
    if mode in ("step", "rmw"):
        job, step, n, start = sys.argv[3:7]
        time.sleep(max(0.0, float(start) - time.time()))
        {"step": run_step, "rmw": run_rmw}[mode](dsn, int(job), step, int(n))
    else:
        rounds, start, stopfile = sys.argv[3:6]
        time.sleep(max(0.0, float(start) - time.time()))
        if mode == "scheduler":
            run_scheduler(dsn, int(rounds), stopfile)
        elif mode == "sim-worker":
            run_sim_worker(dsn, stopfile)
        else:
            run_sweeper(dsn, stopfile)
