"""`etlctl run` against cron: how late each deadline is acted on, what an idle run costs, whether its
memory stays flat, and how long a Jira job takes from `complete` to READY.

Phase 1, side by side (each in a database of its own, all at once, so that they share the machine):
  - deadline lag: 10,000 jobs, 1,000 of them FINISHED at the end of their cool-down, their reset
    deadlines spread evenly over 2 minutes; acted on by one `run`, by three `run`s, and by cron
    (`schedule-next` and `sweep` every 60 s). Lag = the audit row's time of the reset minus the deadline.
  - idle cost: one `run` on 10,000 jobs with nothing due; CPU time of the process and of its server
    backend over the window.
  - end to end: Jira jobs that simulated workers finish and complete (`flow.complete`, with its NOTIFY,
    as the embedding worker's `etlctl complete`) one after another, with 30/30/30 timings (delay,
    backoff, cool-down); from the complete's audit row to the reset's, under `run` and under cron.
Phase 2, alone: RSS of one `run` after 10 passes and after 10,000 (--max-sleep 1ms, nothing due).
"""

from __future__ import annotations

import subprocess
import threading
import time

from bench.database import JIRA, Server, steps_doc
from bench.measure import ETLCTL, Figure, Report, Stat, clean_env

JOBS = 10_000
DUE = 1_000
SPREAD = 120.0  # seconds over which the deadlines are spread
LEAD = 20.0  # seconds from the fill to the first deadline (the processes start meanwhile)
CRON_EVERY = 60.0
E2E_JOBS = 6
E2E_EVERY = 25.0  # seconds between two completes
TIMINGS = {"ETLCTL_DELAY": "30", "ETLCTL_BACKOFF": "30,30,30,30", "ETLCTL_COOLDOWN": "30"}
PASSES = 10_000

FILL = """
INSERT INTO tenants (name, tier) SELECT 'tenant-' || t, 'premium' FROM generate_series(0, %(jobs)s / 5 - 1) t ORDER BY t;
INSERT INTO integrations (provider, type, tenant_id)
SELECT 'Jira', 'Data', (SELECT min(id) FROM tenants) + k / 5 FROM generate_series(0, %(jobs)s - 1) k ORDER BY k;
INSERT INTO etl_jobs (job_name, tenant_id, integration_id, status, next_run, last_run_finished_at)
SELECT 'Jira ' || g, (SELECT min(id) FROM tenants) + g / 5, (SELECT min(id) FROM integrations) + g,
       CASE WHEN g < %(due)s
            THEN jsonb_build_object('overall', 'FINISHED', 'token', md5(g::text), 'steps', %(finished)s::jsonb,
                                    'reset_stage', 'cooldown', 'reset_attempt', 1, 'reset_token', md5(g::text),
                                    'reset_deadline', to_jsonb(now() + make_interval(secs => %(lead)s + g * %(step)s)))
            ELSE jsonb_build_object('overall', 'READY', 'token', NULL, 'steps', %(idle)s::jsonb) END,
       CASE WHEN g < %(due)s THEN NULL ELSE (now() AT TIME ZONE 'UTC') + interval '1 day' + make_interval(secs => g) END,
       (now() AT TIME ZONE 'UTC') - interval '5 minutes'
FROM generate_series(0, %(jobs)s - 1) g ORDER BY g;
VACUUM (ANALYZE) tenants, integrations, etl_jobs
"""

def fill(server: Server, name: str, due: int = DUE, jobs: int = JOBS) -> str:
    from psycopg.types.json import Jsonb

    dsn = server.fresh_database(name)
    params = {"jobs": jobs, "due": due, "lead": LEAD, "step": SPREAD / max(1, due - 1),
              "finished": Jsonb(steps_doc(JIRA, "finished")), "idle": Jsonb(steps_doc(JIRA, "idle"))}
    with server.connect(name) as conn:
        for statement in FILL.strip().split(";\n"):
            conn.execute(statement, params if "%(" in statement else None)
        conn.execute("CREATE TABLE bench_deadlines AS SELECT id, (status ->> 'reset_deadline')::timestamptz AS deadline "
                     "FROM etl_jobs WHERE status ->> 'overall' = 'FINISHED'")
    return dsn


def lags(server: Server, name: str) -> list[float]:
    with server.connect(name) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM a.at - d.deadline)::float AS lag FROM etlctl.audit a "
            "JOIN bench_deadlines d ON d.id = a.job_id WHERE a.details ->> 'action' = 'reset'").fetchall()
        doubled = conn.execute("SELECT count(*) AS n FROM (SELECT job_id FROM etlctl.audit WHERE details ->> 'action' "
                               "= 'reset' GROUP BY job_id HAVING count(*) > 1) x").fetchone()["n"]
    if doubled:
        raise SystemExit(f"bench: {doubled} jobs reset twice in {name}")
    return [r["lag"] for r in rows]


def resets(server: Server, name: str) -> int:
    with server.connect(name) as conn:
        return conn.execute("SELECT count(*) AS n FROM etlctl.audit WHERE details ->> 'action' = 'reset'").fetchone()["n"]


def start_run(dsn: str, *args: str, **env) -> subprocess.Popen:
    return subprocess.Popen([ETLCTL, "run", *args], env=clean_env(ETLCTL_DSN=dsn, **env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(procs) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        if proc.returncode != 143:
            raise SystemExit(f"bench: etlctl run exited {proc.returncode}: {err.decode()[-2000:]}")


class Cron(threading.Thread):
    """cron's block: schedule-next, then sweep, every CRON_EVERY seconds (from its start)."""

    def __init__(self, dsn: str, **env) -> None:
        super().__init__(daemon=True)
        self.env = clean_env(ETLCTL_DSN=dsn, **env)
        self.halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        tick = 0
        while not self.halt.is_set():
            for command in ("schedule-next", "sweep"):
                subprocess.run([ETLCTL, command], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            tick += 1
            self.halt.wait(max(0.0, start + tick * CRON_EVERY - time.monotonic()))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/PID/stat)."""
    import os

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("bench: no VmRSS")


def backend_pid(server: Server, name: str) -> int | None:
    with server.connect(name) as conn:
        row = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'etlctl'",
                           (name,)).fetchone()
    return None if row is None else row["pid"]


def passes(server: Server, name: str) -> int:
    with server.connect(name) as conn:
        row = conn.execute("SELECT coalesce(max(passes), 0) AS n FROM etlctl.runners").fetchone()
    return row["n"]


# --- end to end --------------------------------------------------------------------------------


def e2e_jobs(server: Server, name: str) -> str:
    """E2E_JOBS Jira jobs, RUNNING with their steps finished (the workers' work is done), awaiting complete."""
    from psycopg.types.json import Jsonb

    dsn = server.fresh_database(name)
    with server.connect(name) as conn:
        tenant = conn.execute("INSERT INTO tenants (name, tier) VALUES ('acme', 'premium') RETURNING id").fetchone()["id"]
        for n in range(E2E_JOBS):
            integration = conn.execute("INSERT INTO integrations (provider, type, tenant_id) VALUES ('Jira', 'Data', %s) "
                                       "RETURNING id", (tenant,)).fetchone()["id"]
            conn.execute("INSERT INTO etl_jobs (job_name, tenant_id, integration_id, status) VALUES (%s, %s, %s, %s)",
                         (f"Jira {n}", tenant, integration,
                          Jsonb({"overall": "RUNNING", "token": f"run-{n}", "steps": steps_doc(JIRA, "finished")})))
    return dsn


class Workers(threading.Thread):
    """The embedding worker, simulated: completes one job every E2E_EVERY seconds (as `etlctl complete`)."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn

    def run(self) -> None:
        from etlctl.actions import flow
        from etlctl.store.connection import open_session
        from etlctl.store.settings import ConnectionSettings

        session = open_session(ConnectionSettings(dsn=self.dsn), "complete")
        try:
            import psycopg

            with psycopg.connect(self.dsn) as conn:
                jobs = [row[0] for row in conn.execute("SELECT id FROM etl_jobs ORDER BY id")]
            for n, job in enumerate(jobs):
                flow.complete(session, job, token=f"run-{n}", sync_date=None, delay=30)
                time.sleep(E2E_EVERY)
        finally:
            session.close()


def e2e_seconds(server: Server, name: str) -> list[float]:
    with server.connect(name) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM r.at - c.at)::float AS s FROM etlctl.audit c "
            "JOIN etlctl.audit r ON r.job_id = c.job_id AND r.details ->> 'action' = 'reset' "
            "WHERE c.from_state = 'RUNNING' AND c.to_state = 'FINISHED'").fetchall()
    return [r["s"] for r in rows]


# --- the section -------------------------------------------------------------------------------


def bench_run(report: Report, server: Server) -> None:
    print("run", flush=True)
    names = ["bench_run1", "bench_run3", "bench_cron", "bench_idle", "bench_e2e_run", "bench_e2e_cron"]
    try:
        side_by_side(report, server)
        memory(report, server)
    finally:
        for name in names + ["bench_memory_run"]:
            server.drop(name)


def side_by_side(report: Report, server: Server) -> None:
    e2e = {"run": e2e_jobs(server, "bench_e2e_run"), "cron": e2e_jobs(server, "bench_e2e_cron")}
    idle_dsn = fill(server, "bench_idle", due=0)
    dsns = {name: fill(server, name) for name in ("bench_run1", "bench_run3", "bench_cron")}  # the last fill: its clock
    procs = [start_run(dsns["bench_run1"])] + [start_run(dsns["bench_run3"]) for _ in range(3)]
    idle = start_run(idle_dsn)
    e2e_run = start_run(e2e["run"], **TIMINGS)
    crons = [Cron(dsns["bench_cron"]), Cron(e2e["cron"], **TIMINGS)]
    workers = [Workers(e2e["run"]), Workers(e2e["cron"])]
    for thread in crons + workers:
        thread.start()
    time.sleep(3.0)  # the idle run is up and through its first pass
    idle_backend = backend_pid(server, "bench_idle")
    idle_start = (time.monotonic(), cpu_seconds(idle.pid), cpu_seconds(idle_backend) if idle_backend else 0.0)
    try:
        # cron's last e2e job: completed at (E2E_JOBS - 1) x E2E_EVERY, then at worst a tick + 30 s + a tick + 30 s.
        deadline = time.monotonic() + max(LEAD + SPREAD, E2E_JOBS * E2E_EVERY) + 3 * CRON_EVERY + 60
        while time.monotonic() < deadline:
            done = [resets(server, name) for name in dsns]
            e2e_done = [len(e2e_seconds(server, name)) for name in ("bench_e2e_run", "bench_e2e_cron")]
            if min(done) >= DUE and min(e2e_done) >= E2E_JOBS:
                break
            time.sleep(1.0)
        else:
            raise SystemExit(f"bench: not every deadline was acted on: {done}, end to end {e2e_done}")
        idle_end = (time.monotonic(), cpu_seconds(idle.pid), cpu_seconds(idle_backend) if idle_backend else 0.0)
    finally:
        for thread in crons:
            thread.halt.set()
        stop(procs + [idle, e2e_run])
        for thread in crons + workers:
            thread.join(timeout=120)

    for label, name in (("one `etlctl run`", "bench_run1"), ("three `etlctl run` on one database", "bench_run3"),
                        ("cron: schedule-next and sweep every 60 s", "bench_cron")):
        stat = Stat(lags(server, name))
        target, met = ("p99 ≤ 1 s", stat.q(0.99) <= 1.0) if "run`" in label else ("", None)
        report.add(Figure("run", f"deadline lag, {label}", f"{stat.median:.3f} s",
                          f"p99 {stat.q(0.99):.3f} s, max {max(stat.samples):.3f} s; {len(stat.samples):,} resets",
                          "-", None, target, met))
    window = idle_end[0] - idle_start[0]
    own, backend = idle_end[1] - idle_start[1], idle_end[2] - idle_start[2]
    per_hour = (own + backend) / window * 3600
    report.add(Figure("run", "idle cost: CPU time of `run` and its server backend, nothing due (10,000 jobs, "
                             "--max-sleep 30s)", f"{per_hour:.1f} s/hour",
                      f"{per_hour / 36:.3f}% of a core; over {window:.0f} s: run {own:.2f} s, backend {backend:.2f} s",
                      "-", None, "< 1% of a core", per_hour / 3600 < 0.01))
    for label, name in (("`etlctl run`", "bench_e2e_run"), ("cron, every 60 s", "bench_e2e_cron")):
        stat = Stat(e2e_seconds(server, name))
        report.add(Figure("run", f"end to end, a Jira job from `complete` to READY (30/30/30), {label}",
                          f"{stat.median:.1f} s", f"min {min(stat.samples):.1f} s, max {max(stat.samples):.1f} s; "
                          f"{len(stat.samples)} jobs", "-", None))


def memory(report: Report, server: Server) -> None:
    dsn = fill(server, "bench_memory_run", due=0)
    proc = start_run(dsn, "--max-sleep", "1ms")
    samples: dict[int, int] = {}
    try:
        started = time.monotonic()
        while len(samples) < 2:
            n = passes(server, "bench_memory_run")
            if 10 not in samples and n >= 10:
                samples[10] = rss_kib(proc.pid)
            if n >= PASSES:
                samples[PASSES] = rss_kib(proc.pid)
                seconds = time.monotonic() - started
            if time.monotonic() - started > 1800:
                raise SystemExit(f"bench: only {n} passes in 30 minutes")
            time.sleep(0.05)
    finally:
        stop([proc])
    ratio = samples[PASSES] / samples[10]
    report.add(Figure("run", f"RSS of `run` after {PASSES:,} passes (10,000 jobs, nothing due)",
                      f"{samples[PASSES] / 1024:.1f} MiB", f"{PASSES:,} passes in {seconds:.0f} s",
                      f"after 10 passes: {samples[10] / 1024:.1f} MiB", ratio, "flat (≤ 1.05x)", ratio <= 1.05))
