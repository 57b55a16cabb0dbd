"""One concurrent writer for bench/run.py: update one step's extraction phase of one
job over and over, alternating running/finished (so that every update changes a
value), from a common start time for a fixed time, and report what it did.

  etlctl: etlctl's own flow.step(), the function the `step` command calls, on one session
  bare:   a bare psycopg autocommit loop running the same jsonb_set
  cli:    the `etlctl step` command, one process per update
  sql-full, sql-no-notify, sql-no-audit, sql-no-audit-notify: etlctl's step_update statement
          run by a bare psycopg loop, whole or without a part (to see what each part costs)

Each writer owns its step, so nothing else writes it: every update must find the
value this writer wrote last (etlctl reports it as `previous`), and the job must
end with each writer's last value. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

NOTIFY = ("SELECT pg_notify('etl_job_status', json_build_object('job_id', c.id, 'tenant_id', c.tenant_id, "
          "'overall', c.overall)::text)")


def step_update_variant(name: str) -> str | None:
    """etlctl's step_update without some of its parts; None when the statement no longer has the expected shape."""
    from etlctl.store import queries

    sql = queries.get("step_update")
    if name == "sql-full":
        return sql
    if name in ("sql-no-audit", "sql-no-audit-notify"):
        audit_at, notified_at = sql.find("audit AS ("), sql.find("notified AS (")
        if not 0 < audit_at < notified_at:
            return None
        sql = sql[:audit_at] + "audit AS (SELECT 1 WHERE false),\n" + sql[notified_at:]
    if name in ("sql-no-notify", "sql-no-audit-notify"):
        if NOTIFY not in sql:
            return None
        sql = sql.replace(NOTIFY, "SELECT 1")
    return sql


BARE_SQL = ("UPDATE etl_jobs SET status = jsonb_set(status, ARRAY['steps', %s, 'extraction'], to_jsonb(%s::text)) "
            "WHERE id = %s")


def main() -> None:
    mode, dsn, job_id, step, token, start_at, seconds = sys.argv[1:8]
    job_id, start_at, seconds = int(job_id), float(start_at), float(seconds)
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        last = conn.execute("SELECT status #>> ARRAY['steps', %s, 'extraction'] FROM etl_jobs WHERE id = %s",
                            (step, job_id)).fetchone()[0]
    count, mismatches, values = 0, 0, ("running", "finished")
    nxt = 0 if last != "running" else 1

    if mode == "etlctl":
        from etlctl.store import settings as config
        from etlctl.store import connection as db
        from etlctl.actions import flow

        session_cm = db.connect(config.ConnectionSettings(dsn=dsn), command="step")
        session = session_cm.__enter__()

        def update(value):
            result = flow.step(session, job_id, step_name=step, phase="extraction", value=value, token=token)
            return result["result"] == "updated", result.get("previous")
    elif mode.startswith("sql-"):
        conn = psycopg.connect(dsn, autocommit=True)
        sql = step_update_variant(mode)
        from etlctl.actions.flow import TOKEN_PREFIX

        base = {"now": None, "actor_host": "bench", "actor_pid": os.getpid(), "actor_command": "step", "job_id": job_id,
                "step": step, "phase": "extraction", "token": token, "min_prefix": TOKEN_PREFIX}

        def update(value):
            row = conn.execute(sql, {**base, "value": value}).fetchone()
            return row is not None and row[-3] == 1, None  # the `changed` column
    elif mode == "bare":
        conn = psycopg.connect(dsn, autocommit=True)

        def update(value):
            return conn.execute(BARE_SQL, (step, value, job_id)).rowcount == 1, None
    else:  # cli
        etlctl = os.path.join(os.path.dirname(sys.executable), "etlctl")
        env = {**os.environ, "ETLCTL_DSN": dsn}

        def update(value):
            proc = subprocess.run([etlctl, "step", str(job_id), step, "extraction", value, "--token", token, "--json"],
                                  env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                return False, None
            result = json.loads(proc.stdout)
            return result["result"] == "updated", result.get("previous")

    time.sleep(max(0.0, start_at - time.time()))
    started = time.time()
    end = start_at + seconds
    failed = 0
    while time.time() < end:
        value = values[nxt]
        ok, previous = update(value)
        if not ok:
            failed += 1
            continue
        if mode != "bare" and previous != last:
            mismatches += 1
        last, nxt, count = value, 1 - nxt, count + 1
    finished = time.time()
    print(json.dumps({"step": step, "count": count, "last": last, "mismatches": mismatches, "failed": failed,
                      "started": started, "finished": finished, "late": started - start_at}))


if __name__ == "__main__":
    main()
