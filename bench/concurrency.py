"""Concurrent writers: 16 processes updating one job through etlctl's `step`,
against a bare psycopg jsonb_set loop (bench/writer.py is one writer).
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from bench.database import Server, quiet, steps_doc
from bench.measure import PYTHON, REPO, Figure, Report, Stat, clean_env


WRITERS = 16


def concurrent_job(server: Server) -> tuple[str, int, list[str], str]:
    """A RUNNING job of a 16-step kind (kinds are data an operator adds), one step per writer."""
    from psycopg.types.json import Jsonb

    dsn = server.fresh_database("bench_writers")
    steps = [f"bench_step_{n:02d}" for n in range(1, WRITERS + 1)]
    with server.connect("bench_writers") as conn:
        conn.execute("INSERT INTO etlctl.job_kinds (name, description) VALUES ('bench16', 'bench: 16 steps')")
        for n, step in enumerate(steps, 1):
            conn.execute("INSERT INTO etlctl.kind_steps (kind, position, step, display_name) VALUES ('bench16', %s, %s, %s)",
                         (n, step, step))
        tenant = conn.execute("INSERT INTO tenants (name) VALUES ('writers') RETURNING id").fetchone()["id"]
        status = {"overall": "RUNNING", "token": "bench-run", "steps": steps_doc(steps, "idle")}
        job = conn.execute("INSERT INTO etl_jobs (job_name, tenant_id, status) VALUES ('bench16', %s, %s) RETURNING id",
                           (tenant, Jsonb(status))).fetchone()["id"]
    return dsn, job, steps, "bench-run"


def writers_phase(server: Server, mode: str, dsn: str, job: int, steps: list[str], token: str, seconds: float) -> dict:
    with server.connect("bench_writers") as conn:
        audit_before = conn.execute("SELECT count(*) AS n FROM etlctl.audit WHERE job_id = %s", (job,)).fetchone()["n"]
    start_at = time.time() + 4.0  # time for 16 processes to import and connect on a small machine
    procs = [subprocess.Popen([PYTHON, str(REPO / "bench" / "writer.py"), mode, dsn, str(job), step, token, str(start_at), str(seconds)],
                              env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for step in steps]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=seconds + 120)
        if proc.returncode != 0:
            raise SystemExit(f"bench: writer ({mode}) failed: {err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    with server.connect("bench_writers") as conn:
        doc = conn.execute("SELECT status FROM etl_jobs WHERE id = %s", (job,)).fetchone()["status"]
        audit_after = conn.execute("SELECT count(*) AS n FROM etlctl.audit WHERE job_id = %s", (job,)).fetchone()["n"]
    total = sum(r["count"] for r in results)
    start = min(r["started"] for r in results)
    end = max(r["finished"] for r in results)
    final_ok = all(doc["steps"][r["step"]]["extraction"] == r["last"] for r in results)
    return {
        "mode": mode, "updates": total, "seconds": end - start, "rate": total / (end - start),
        "per_writer": [r["count"] for r in results], "mismatches": sum(r["mismatches"] for r in results),
        "failed": sum(r["failed"] for r in results), "final_ok": final_ok,
        "audited": audit_after - audit_before, "late": max(r["late"] for r in results),
    }


def bench_writers(report: Report, server: Server, seconds: float, rounds: int, cli_seconds: float) -> None:
    print("concurrent writers", flush=True)
    quiet(server)
    dsn, job, steps, token = concurrent_job(server)
    phases = {"etlctl": [], "bare": []}
    for round_ in range(rounds):
        for mode in (("etlctl", "bare") if round_ % 2 == 0 else ("bare", "etlctl")):
            result = writers_phase(server, mode, dsn, job, steps, token, seconds)
            phases[mode].append(result)
            print(f"  {mode}: {result['rate']:.0f} updates/s ({result['updates']} in {result['seconds']:.1f} s), "
                  f"lost {result['mismatches']}, final ok {result['final_ok']}, audited {result['audited']}, "
                  f"failed {result['failed']}, late {result['late']:.2f} s", flush=True)
    cli = writers_phase(server, "cli", dsn, job, steps, token, cli_seconds) if cli_seconds > 0 else None
    from bench.writer import step_update_variant

    variants = {}
    for mode in ("sql-full", "sql-no-notify", "sql-no-audit", "sql-no-audit-notify"):
        if step_update_variant(mode) is not None:
            variants[mode] = writers_phase(server, mode, dsn, job, steps, token, seconds)
            print(f"  {mode}: {variants[mode]['rate']:.0f} updates/s, final ok {variants[mode]['final_ok']}", flush=True)
    breakdown = step_cost_breakdown(dsn, job, steps[0], token)
    server.drop("bench_writers")

    etl, bare = Stat([r["rate"] for r in phases["etlctl"]]), Stat([r["rate"] for r in phases["bare"]])
    lost = sum(r["mismatches"] for r in phases["etlctl"]) + (cli["mismatches"] if cli else 0)
    final_ok = all(r["final_ok"] for rs in phases.values() for r in rs) and (cli is None or cli["final_ok"])
    audited_ok = all(r["audited"] == r["updates"] for r in phases["etlctl"]) and (cli is None or cli["audited"] == cli["updates"])
    ratio = etl.median / bare.median
    updates = sum(r["updates"] for r in phases["etlctl"])
    report.add(Figure("writers", f"{WRITERS} processes × `flow.step` (what `etlctl step` runs) on one job, {seconds:.0f} s × {rounds}",
                      f"{etl.median:.0f} updates/s", f"IQR {etl.q(0.25):.0f}–{etl.q(0.75):.0f}, min {min(etl.samples):.0f}",
                      f"bare psycopg loop, same jsonb_set: {bare.median:.0f} updates/s (IQR {bare.q(0.25):.0f}–{bare.q(0.75):.0f})",
                      ratio, "≥ 0.8x", ratio >= 0.8))
    report.add(Figure("writers", "lost updates", f"{lost} of {updates:,} (etlctl), final state {'correct' if final_ok else 'WRONG'}, "
                      f"audit rows {'= updates' if audited_ok else '≠ updates'}", "deterministic", "-", None, "none lost",
                      lost == 0 and final_ok and audited_ok))
    if cli:
        report.add(Figure("writers", f"{WRITERS} processes × `etlctl step` (one CLI process per update), {cli_seconds:.0f} s",
                          f"{cli['rate']:.1f} updates/s", f"{cli['updates']} updates; lost {cli['mismatches']}", "-", None,
                          note="dominated by process start-up (see latency)"))
    lines = ["| round | mode | updates/s | updates | per writer (min–max) | lost | failed | final state | audit rows |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for mode, rs in phases.items():
        for n, r in enumerate(rs, 1):
            lines.append(f"| {n} | {mode} | {r['rate']:.0f} | {r['updates']:,} | {min(r['per_writer'])}–{max(r['per_writer'])} | "
                         f"{r['mismatches'] if mode != 'bare' else 'n/a'} | {r['failed']} | {'ok' if r['final_ok'] else 'WRONG'} | "
                         f"{r['audited'] if mode != 'bare' else '-'} |")
    if cli:
        lines.append(f"| 1 | etlctl step (CLI) | {cli['rate']:.1f} | {cli['updates']:,} | {min(cli['per_writer'])}–{max(cli['per_writer'])} | "
                     f"{cli['mismatches']} | {cli['failed']} | {'ok' if cli['final_ok'] else 'WRONG'} | {cli['audited']} |")
    report.text("writers", *lines)
    names = {"sql-full": "etlctl's `step_update` statement, run by a bare psycopg loop",
             "sql-no-notify": "… without its pg_notify", "sql-no-audit": "… without its audit row",
             "sql-no-audit-notify": "… without audit row and pg_notify"}
    lines = ["", f"What the parts of the statement cost under the same contention ({WRITERS} processes, {seconds:.0f} s each, "
             "one run each, after the rounds above). Only to see what each part costs: etlctl runs the full statement, "
             "and keeps its audit row and notification.", "",
             "| statement | updates/s | vs the bare loop's median |", "| --- | --- | --- |"]
    for mode, r in variants.items():
        lines.append(f"| {names[mode]} | {r['rate']:.0f} | {r['rate'] / bare.median:.2f}x |")
    lines.append(f"| bare psycopg jsonb_set (median of the rounds) | {bare.median:.0f} | 1.00x |")
    report.text("writers", *lines)
    lines = ["", "Where the difference goes: one client alone (no contention), the fastest of 12 batches of 150 updates "
             "each, with parts of `step_update` taken out one at a time. Only to see what each part costs: etlctl runs the "
             "full statement.", "",
             "| statement | µs per update | vs bare jsonb_set |", "| --- | --- | --- |"]
    for label, micros in breakdown.items():
        lines.append(f"| {label} | {micros:.0f} | {micros / breakdown['bare psycopg jsonb_set']:.2f}x |")
    report.text("writers", *lines)


def step_cost_breakdown(dsn: str, job: int, step: str, token: str) -> dict[str, float]:
    """Single-client cost of etlctl's step update and of variants without some of its parts."""
    import psycopg
    from psycopg.rows import dict_row

    from etlctl.store import settings as config
    from etlctl.store import connection as db
    from etlctl.actions import flow
    from etlctl.store import queries

    from bench.writer import step_update_variant

    full = queries.get("step_update")

    def without(sql, old, new):
        changed = sql.replace(old, new)
        return changed if changed != sql else None  # the statement changed shape: skip this variant

    no_notify, no_audit, no_audit_notify = (step_update_variant(v) for v in ("sql-no-notify", "sql-no-audit", "sql-no-audit-notify"))
    kind = "CROSS JOIN LATERAL (SELECT etlctl.job_kind(j.job_name, i.provider) AS kind) k"
    no_kind = without(no_audit_notify, kind, "CROSS JOIN LATERAL (SELECT 'bench16'::text AS kind) k") if no_audit_notify else None
    no_steps = without(no_kind, "(SELECT array_agg(s.step ORDER BY s.position) FROM etlctl.kind_steps s WHERE s.kind = k.kind)",
                       f"ARRAY['{step}']") if no_kind else None
    bare = "UPDATE etl_jobs SET status = jsonb_set(status, ARRAY['steps', %(step)s, 'extraction'], to_jsonb(%(value)s::text)) WHERE id = %(job_id)s"
    values = ("running", "finished")
    best: dict[str, float] = {}
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn, \
            db.connect(config.ConnectionSettings(dsn=dsn), command="step") as session:
        params = {"now": None, "actor_host": "bench", "actor_pid": os.getpid(), "actor_command": "step", "job_id": job,
                  "step": step, "phase": "extraction", "token": token, "min_prefix": flow.TOKEN_PREFIX}

        def statement(sql):
            return lambda n: conn.execute(sql, {**params, "value": values[n % 2]})

        variants = {
            "etlctl `flow.step` (what `etlctl step` runs)": lambda n: flow.step(
                session, job, step_name=step, phase="extraction", value=values[n % 2], token=token),
            "`step_update` through bare psycopg": statement(full),
            "… without pg_notify": statement(no_notify) if no_notify else None,
            "… without the audit row": statement(no_audit) if no_audit else None,
            "… without audit row and pg_notify": statement(no_audit_notify) if no_audit_notify else None,
            "… and without looking up the job's kind": statement(no_kind) if no_kind else None,
            "… and without checking the step is one of the kind's": statement(no_steps) if no_steps else None,
            "bare psycopg jsonb_set": statement(bare),
        }
        variants = {k: v for k, v in variants.items() if v is not None}
        n = 0  # every update changes the value: running, finished, running, ...
        for _ in range(12):
            for label, run_one in variants.items():
                for _ in range(5):
                    n += 1
                    run_one(n)
                start = time.perf_counter()
                for _ in range(150):
                    n += 1
                    run_one(n)
                best[label] = min(best.get(label, 1e9), (time.perf_counter() - start) / 150 * 1e6)
    return best
