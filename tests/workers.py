"""Worker processes for the concurrency tests: `python -m tests.workers MODE ...`.

step  DSN JOB STEP N START   N updates of one step through etlctl's own `step` code
rmw   DSN JOB STEP N START   the same updates as a read-modify-write (the bug etlctl avoids)

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
    from etlctl import config, db, flow

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


if __name__ == "__main__":
    mode, dsn, job, step, n, start = sys.argv[1:7]
    time.sleep(max(0.0, float(start) - time.time()))
    {"step": run_step, "rmw": run_rmw}[mode](dsn, int(job), step, int(n))
