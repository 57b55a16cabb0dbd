"""Statements and transactions per command, counted on the wire by tests/pgproxy.py."""

from __future__ import annotations

import subprocess

from bench.database import JIRA, Server, steps_doc
from bench.measure import ETLCTL, Figure, Report, clean_env, plural


def count_round_trips(server: Server) -> dict:
    """Statements and transactions per command, counted on the wire by tests/pgproxy.py."""
    from psycopg.types.json import Jsonb

    from tests.pgproxy import PgProxy

    server.fresh_database("bench_round_trips")
    with server.connect("bench_round_trips") as conn:
        tenant = conn.execute("INSERT INTO tenants (name) VALUES ('rt') RETURNING id").fetchone()["id"]

        def job(name, status):
            integration = conn.execute("INSERT INTO integrations (provider, type, tenant_id) VALUES ('Jira', 'Data', %s) RETURNING id",
                                       (tenant,)).fetchone()["id"]
            return conn.execute("INSERT INTO etl_jobs (job_name, tenant_id, integration_id, status) VALUES (%s, %s, %s, %s) RETURNING id",
                                (name, tenant, integration, Jsonb(status))).fetchone()["id"]

        done = {"overall": "FINISHED", "token": "t1", "steps": steps_doc(JIRA, "finished")}
        run = {"overall": "RUNNING", "token": "t2", "steps": steps_doc(JIRA, "idle")}
        finished_job, running_job, stepping_job = job("Jira", done), job("Jira 2", run), job("Jira 3", dict(run, token="t3"))
        job("Jira 4", {"overall": "READY", "steps": {}})  # due: schedule-next starts it
        job("Jira 5", {"overall": "FINISHED", "token": "t5", "steps": steps_doc(JIRA, "finished")})  # sweep schedules its check
    rows = {}
    commands = [
        ("check", ["check", finished_job]),
        ("status", ["status", finished_job]),
        ("complete", ["complete", running_job, "--token", "t2"]),
        ("step", ["step", stepping_job, JIRA[0], "extraction", "running", "--token", "t3"]),
        ("reset", ["reset", finished_job]),
        ("schedule-next (tick)", ["schedule-next"]),
        ("sweep (tick)", ["sweep"]),
    ]
    with PgProxy(server.running.socket_dir, server.running.port) as proxy:
        for label, args in commands:
            rows[label] = proxied(proxy, "bench_round_trips", args)
    server.drop("bench_round_trips")
    return rows


def proxied(proxy, dbname: str, args) -> dict:
    from tests.pgproxy import query_name

    proxy.reset()
    proc = subprocess.run([ETLCTL, *map(str, args)], env=clean_env(ETLCTL_DSN=proxy.dsn(dbname)), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench: etlctl {args} through the proxy exited {proc.returncode}: {proc.stderr}")
    conns = proxy.client_connections()
    statements = [query_name(s) for c in conns for s in c.statements]
    transactions = [tx for c in conns for tx in c.transactions()]
    control = [m for c in conns for m in c.control]
    return {"connections": len(conns), "statements": statements, "transactions": len(transactions), "control": control}


def bench_round_trips(report: Report, server: Server) -> dict:
    print("round trips", flush=True)
    rows = count_round_trips(server)
    lines = ["| command | connections | statements | transactions | transaction control | statements, in order |",
             "| --- | --- | --- | --- | --- | --- |"]
    for label, row in rows.items():
        lines.append(f"| `{label}` | {row['connections']} | {len(row['statements'])} | {row['transactions']} | "
                     f"{', '.join(row['control']) or '-'} | {', '.join(row['statements'])} |")
    report.text("round trips", *lines)
    expect = {"check": (1, 1), "complete": (1, 1), "step": (1, 1), "reset": (2, 1)}
    for label, (statements, transactions) in expect.items():
        row = rows[label]
        report.add(Figure("round trips", f"`{label}`", f"{plural(len(row['statements']), 'statement')}, {plural(row['transactions'], 'transaction')}",
                          "deterministic", "-", None,
                          "1 statement" if label == "check" else "1 transaction",
                          (len(row["statements"]) == 1 and not row["control"]) if label == "check" else row["transactions"] == 1))
    return rows
