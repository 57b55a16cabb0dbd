"""The bench's embedded server, its databases, and the jobs it fills them with:
the same work due at every size (DUE jobs for schedule-next and DUE for the
sweep), put back after every tick.
"""

from __future__ import annotations

import subprocess
import time

from bench.measure import ETLCTL, HOME, clean_env


DUE = 1000  # due jobs at every size (READY due for schedule-next, FINISHED due for sweep)


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


def count_started(server: Server, dbname: str, overall: str) -> int:
    with server.connect(dbname) as conn:
        return conn.execute("SELECT count(*) AS n FROM etl_jobs j JOIN bench_saved s USING (id) "
                            "WHERE j.status ->> 'overall' = %s", (overall,)).fetchone()["n"]


def count_swept(server: Server, dbname: str) -> int:
    with server.connect(dbname) as conn:
        return conn.execute("SELECT count(*) AS n FROM etl_jobs j JOIN bench_saved s USING (id) "
                            "WHERE j.status IS DISTINCT FROM s.status AND s.status ->> 'overall' = 'FINISHED'").fetchone()["n"]


def quiet(server: Server) -> None:
    """Write out what earlier sections left dirty (the 1M-job load), so that it does not land in the next one."""
    with server.connect() as conn:
        conn.execute("CHECKPOINT")
