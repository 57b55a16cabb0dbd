"""The failover load: a real primary and a streaming standby (tests/cluster.py),
the primary stopped with ``-m immediate`` in the middle of the work, the standby
promoted; no mock, no proxy pretending to be a server. tests/test_failover.py
runs it once each way; ``python -m tests.failover_load`` measures the figures of
BENCHMARKS.md (FAILOVERS=5 failovers each way, and the commit latency of a step
under each synchronous_commit).

The load (class Load) is what production runs, each command a separate etlctl
process against the multi-host DSN (``host=a,b target_session_attrs=read-write``):

    schedule-next    sweep    wait-and-reset    3 x step writer (take a RUNNING job,
    watch (one process, for the whole run)        a step per phase, complete)

Adding a command is one line of LOOPS (a loop of short commands) or FOREVER (a
long-running process, restarted when it exits): ``etlctl run`` goes there.

Before the first kill the harness cuts the primary's replication connection
(and refuses the standby's next ones: cluster.cut_replication): under synchronous
replication every commit then waits and nothing is acknowledged; under
asynchronous replication commits go on, on the primary alone, and the kill loses
them. So the synchronous test's "0 lost" is a claim that can fail: run it on an
asynchronous cluster and it does (test_failover.py's test_async_loses_acknowledged_writes).

Checked on the new primary, from a trigger's log of every change to
``etl_jobs`` (made in the same transaction as the change, so it survives
exactly as the change does) and the audit:

- every step update and complete a writer was told succeeded (exit 0) is in
  the audit (synchronous: 0 lost; asynchronous: counted);
- no run started twice; every state change by etlctl has exactly one audit row;
- every job changes state after the failover; no command exits 1 or hangs;
- the downtime: from the kill to the first change committed on the new primary.
"""

from __future__ import annotations

import collections
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.cluster import Cluster

STEPS = ("github_repositories", "github_prs_commits_reviews_comments")
PHASES = ("extraction", "transform", "embedding")
FAST = ["--delay", "0.2", "--backoff", "0.2,0.4,0.8,1.5", "--cooldown", "0.3"]
# Bounds of every etlctl process of the load: a hang is the deadline's (statement plus connect timeout) at most.
ENV = {"ETLCTL_STATEMENT_TIMEOUT": "5s", "ETLCTL_CONNECT_TIMEOUT": "2s"}
HANG = 30  # seconds: a process of the load still running after this hung past its timeouts
EXPECTED_EXITS = {0, 3, 4, 6, 7}  # 6: the primary died under it; 3, 4: nothing to do, or another won
JOBS = 6

LOG = """
CREATE TABLE failover_changes (
    id bigserial PRIMARY KEY, job_id int, from_state text, to_state text, old_token text, new_token text,
    app text, port int NOT NULL DEFAULT current_setting('port')::int, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION failover_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO failover_changes (job_id, from_state, to_state, old_token, new_token, app)
    VALUES (NEW.id, OLD.status ->> 'overall', NEW.status ->> 'overall', OLD.status ->> 'token',
            NEW.status ->> 'token', current_setting('application_name'));
    RETURN NEW;
END $$;
CREATE TRIGGER failover_log AFTER UPDATE ON etl_jobs FOR EACH ROW EXECUTE FUNCTION failover_log();
"""


class Load:
    """etlctl processes in loops against a cluster's multi-host DSN, and what they were told."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.dsn = cluster.dsn("etl")
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.live: set[subprocess.Popen] = set()
        self.exits = collections.Counter()  # (command, exit status) -> how many
        self.unexpected: list[str] = []
        self.acked: list[tuple] = []  # (job, token, step, phase, value) acknowledged; step None: a complete
        self.busy: set[int] = set()  # jobs a writer works on
        self.watch: subprocess.Popen | None = None

    # --- setup --------------------------------------------------------------------------------

    def setup(self) -> None:
        self.cluster.primary.sql("CREATE DATABASE etl")
        code, _, err = self.etlctl("db", "init")
        assert code == 0, err
        self.sql(LOG)
        tenant = self.sql("INSERT INTO tenants (name) VALUES ('load') RETURNING id")[0]["id"]
        for n in range(JOBS):
            integration = self.sql("INSERT INTO integrations (provider, type, tenant_id) VALUES ('GitHub', 'Data', %s) "
                                   "RETURNING id", tenant)[0]["id"]
            self.sql("INSERT INTO etl_jobs (job_name, tenant_id, integration_id, schedule_interval_minutes) "
                     "VALUES (%s, %s, %s, 0)", f"GitHub {n}", tenant, integration)  # its kind: the provider's
        # A job no loop touches (its kind has no first message: never started; another tenant than the
        # sweep's), FINISHED, for one wait-and-reset that spans the failover.
        tenant = self.sql("INSERT INTO tenants (name) VALUES ('wex') RETURNING id")[0]["id"]
        status = {"overall": "FINISHED", "token": "tok-wex", "steps": {"wex_ad_users": dict.fromkeys(PHASES, "finished")}}
        self.spanning_job = self.sql("INSERT INTO etl_jobs (job_name, tenant_id, status, last_run_finished_at) "
                                     "VALUES ('Wex AD', %s, %s, now()) RETURNING id", tenant, Jsonb(status))[0]["id"]
        self.cluster.wait_streaming()

    # --- processes ----------------------------------------------------------------------------

    def popen(self, *args) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETLCTL_", "PG"))}
        env.update(ENV, ETLCTL_DSN=self.dsn)
        return subprocess.Popen([sys.executable, "-m", "etlctl", *[str(a) for a in args]], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def etlctl(self, *args, timeout: float = HANG) -> tuple[int, str, str]:
        proc = self.popen(*args)
        with self.lock:
            self.live.add(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += f"\n(no answer within {timeout}s: killed)"
        with self.lock:
            self.live.discard(proc)
            self.exits[(args[0], proc.returncode)] += 1
            if proc.returncode not in EXPECTED_EXITS:
                self.unexpected.append(f"etlctl {' '.join(map(str, args))} exited {proc.returncode}: {err.strip()}")
        return proc.returncode, out, err

    def sql(self, query: str, *params):
        with psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row, connect_timeout=2) as conn:
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else cur.rowcount

    # --- the loops ----------------------------------------------------------------------------

    def schedule_next(self) -> None:
        self.etlctl("schedule-next")
        self.stop.wait(0.3)

    def sweep(self) -> None:
        self.etlctl("sweep", "--tenant", "load", *FAST)
        self.stop.wait(0.3)

    def wait_and_reset(self) -> None:
        finished = self.sql("SELECT id FROM etl_jobs WHERE status ->> 'overall' = 'FINISHED' AND id <> %s "
                            "ORDER BY random() LIMIT 1", self.spanning_job)
        if finished:
            self.etlctl("wait-and-reset", finished[0]["id"], *FAST)
        self.stop.wait(0.3)

    def writer(self, name: str):
        """A worker: takes the RUNNING job no other writer holds that changed longest ago, reports each phase
        finished, completes it.
        A write whose fate is unknown (exit 6: the primary died under it) is written again, as a worker
        retries its status update; the run being over (exit 4) ends the work."""
        def body() -> None:
            with self.lock:
                busy = set(self.busy)
            # The run waiting longest first (a random pick could starve one job for the whole test).
            running = self.sql("SELECT id, status ->> 'token' AS token FROM etl_jobs "
                               "WHERE status ->> 'overall' = 'RUNNING' AND NOT id = ANY(%s) "
                               "ORDER BY last_updated_at NULLS FIRST, id LIMIT 1", list(busy))
            if not running:
                self.stop.wait(0.2)
                return
            job, token = running[0]["id"], running[0]["token"]
            with self.lock:
                if job in self.busy:
                    return
                self.busy.add(job)
            try:
                for step in STEPS:
                    for phase in PHASES:
                        if not self.until_known(("step", job, step, phase, "finished", "--token", token),
                                                (job, token, step, phase, "finished")):
                            return
                self.until_known(("complete", job, "--token", token, "--delay", "0.2"),
                                 (job, token, None, None, "FINISHED"))
            finally:
                with self.lock:
                    self.busy.discard(job)

        return body

    def until_known(self, args, ack: tuple) -> bool:
        """Run a write until its fate is known: True when acknowledged (exit 0)."""
        for _ in range(20):
            if self.stop.is_set():
                return False
            proc = self.popen(*args)
            with self.lock:
                self.live.add(proc)
            code = self.finish(proc, args, ack)
            if code == 0:
                return True
            if code not in (6, 7):
                return False
            self.stop.wait(0.3)
        return False

    def finish(self, proc: subprocess.Popen, args, ack: tuple) -> int:
        try:
            _, err = proc.communicate(timeout=HANG)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            err += f"\n(no answer within {HANG}s: killed)"
        with self.lock:
            self.live.discard(proc)
            self.exits[(args[0], proc.returncode)] += 1
            if proc.returncode == 0:
                self.acked.append(ack)
            elif proc.returncode not in EXPECTED_EXITS:
                self.unexpected.append(f"etlctl {' '.join(map(str, args))} exited {proc.returncode}: {err.strip()}")
        return proc.returncode

    def loop(self, body) -> None:
        while not self.stop.is_set():
            try:
                body()
            except psycopg.Error:
                self.stop.wait(0.2)  # the harness's own SQL, while no host accepts writes

    def forever(self, *args):
        """A long-running etlctl (relay --follow, run): started again whenever it exits."""
        def body() -> None:
            proc = self.popen(*args)
            with self.lock:
                self.live.add(proc)
            while proc.poll() is None and not self.stop.wait(0.2):
                pass
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=HANG)
            with self.lock:
                self.live.discard(proc)
                self.exits[(args[0], proc.returncode)] += 1
                if proc.returncode not in EXPECTED_EXITS | {143}:
                    self.unexpected.append(f"etlctl {' '.join(args)} exited {proc.returncode}: {err.strip()}")
        return body

    # What runs, one line each: short commands in a loop (LOOPS), long-running ones kept running (FOREVER).
    # `etlctl run` (issue 11), when it lands: FOREVER += [("run", ("run", "--worker", "failover-run"))].
    LOOPS = [("schedule-next", "schedule_next"), ("sweep", "sweep"), ("wait-and-reset", "wait_and_reset")]
    WRITERS = 3
    FOREVER: list[tuple[str, tuple[str, ...]]] = []

    def start(self) -> None:
        self.watch = self.popen("watch")
        bodies = [(name, getattr(self, method)) for name, method in self.LOOPS]
        bodies += [(f"writer-{n}", self.writer(f"writer-{n}")) for n in range(self.WRITERS)]
        bodies += [(name, self.forever(*args)) for name, args in self.FOREVER]
        for name, body in bodies:
            thread = threading.Thread(target=self.loop, args=(body,), name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish_load(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=HANG + 5)
        assert not any(thread.is_alive() for thread in self.threads), "a loop of the load never ended"

    def close(self) -> None:
        self.stop.set()
        with self.lock:
            for proc in list(self.live) + ([self.watch] if self.watch else []):
                if proc.poll() is None:
                    proc.kill()

    # --- the failover -------------------------------------------------------------------------

    def acks_since(self, mark: int) -> int:
        with self.lock:
            return len(self.acked) - mark

    def failover(self, cut: bool) -> dict:
        """Kill the primary (after cutting its replication, and letting writers write for a moment, when ``cut``),
        promote the standby; the times of each."""
        if cut:
            self.cluster.cut_replication()
            mark = self.acks_since(0)
            # A few acknowledged writes, if any can be (asynchronous), before the kill; none can be (synchronous:
            # 4 s of commits waiting). Either way before the spanning wait-and-reset's deadline (8 s).
            end = time.monotonic() + (4 if self.cluster.synchronous else 6)
            while time.monotonic() < end and self.acks_since(mark) < 3:
                time.sleep(0.05)
        old_port = self.cluster.primary.port
        killed = time.time()
        self.cluster.kill_primary()
        promoting = time.time()
        self.cluster.promote()
        promoted = time.time()
        return {"killed": killed, "kill_s": promoting - killed, "promote_s": promoted - promoting,
                "old_port": old_port, "new_port": self.cluster.primary.port}

    def first_write_after(self, event: dict, timeout: float = 30) -> float:
        """Seconds from the kill to the first change committed on the new primary."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            rows = self.cluster.primary.sql(
                "SELECT extract(epoch FROM min(at)) FROM failover_changes WHERE port = %s AND at > to_timestamp(%s)",
                dbname="etl", params=(event["new_port"], event["killed"]))
            if rows[0][0] is not None:
                return float(rows[0][0]) - event["killed"]
            time.sleep(0.1)
        raise AssertionError(f"no write on the new primary within {timeout}s of the failover")

    def progressed(self, event: dict, timeout: float = 40) -> set[int]:
        """Jobs with no change of state on the new primary after ``timeout`` seconds (empty: all progressed)."""
        end = time.monotonic() + timeout
        while True:
            rows = self.cluster.primary.sql(
                "SELECT j.id FROM etl_jobs j WHERE j.id <> %s AND NOT EXISTS (SELECT 1 FROM failover_changes c "
                "WHERE c.job_id = j.id AND c.port = %s AND c.at > to_timestamp(%s) "
                "AND c.from_state IS DISTINCT FROM c.to_state)",
                dbname="etl", params=(self.spanning_job, event["new_port"], event["killed"]))
            stuck = {row[0] for row in rows}
            if not stuck or time.monotonic() >= end:
                return stuck
            time.sleep(0.2)

    # --- the checks ---------------------------------------------------------------------------

    def check(self) -> dict:
        """On the new primary: what was lost of what the writers were told, and the invariants."""
        node = self.cluster.primary
        with psycopg.connect(node.conninfo("etl"), autocommit=True, row_factory=dict_row) as conn:
            audit = conn.execute("SELECT job_id, from_state, to_state, token, pid, command, details "
                                 "FROM etlctl.audit").fetchall()
            changes = conn.execute("SELECT * FROM failover_changes ORDER BY id").fetchall()
        # Any process's audit row: a write retried after an unknown fate may have found the value set already.
        audited_steps = {(a["job_id"], a["token"], a["details"].get("step"), a["details"].get("phase"),
                          a["details"].get("to")) for a in audit if a["command"] == "step"}
        audited_completes = {(a["job_id"], a["token"], None, None, a["to_state"]) for a in audit
                             if a["command"] == "complete" and a["to_state"] == "FINISHED"}
        with self.lock:
            acked = list(self.acked)
        lost = [ack for ack in acked if ack not in (audited_steps if ack[2] else audited_completes)]
        transitions = [c for c in changes if c["from_state"] is not None and c["from_state"] != c["to_state"]
                       or c["old_token"] != c["new_token"]]
        by_etlctl = collections.Counter(
            (c["job_id"], c["from_state"], c["to_state"], c["new_token"] if c["to_state"] == "RUNNING" else c["old_token"])
            for c in transitions if c["app"] == "etlctl")
        state_audit = collections.Counter((a["job_id"], a["from_state"], a["to_state"], a["token"]) for a in audit
                                          if a["from_state"] is not a["to_state"] and a["from_state"] != a["to_state"])
        starts = collections.Counter(c["new_token"] for c in transitions if c["to_state"] == "RUNNING")
        return {
            "acknowledged": len(acked), "lost": lost,
            "unaudited": dict(by_etlctl - state_audit), "audit_without_change": dict(state_audit - by_etlctl),
            "started_twice": {token: n for token, n in starts.items() if n > 1},
            "runs_started": len(starts), "state_changes": len(transitions),
            "exits": dict(collections.Counter(str(code) for (_, code), n in self.exits.items() for _ in range(n))),
            "unexpected": list(self.unexpected),
        }


def doctor(load: Load) -> tuple[int, str]:
    code, out, err = load.etlctl("doctor")
    return code, out + err


def run_failovers(synchronous: bool, failovers: int = 1) -> dict:
    """A cluster under load, ``failovers`` times: kill, promote, let the load carry on, check, rejoin."""
    cluster = Cluster(synchronous=synchronous)
    load = Load(cluster)
    figures: dict = {"synchronous": synchronous, "downtime_s": [], "promote_s": [], "stuck": [], "spanning": []}
    try:
        cluster.start()
        load.setup()
        figures["doctor_before"] = doctor(load)
        load.start()
        for n in range(failovers):
            # Work under way: some runs started and some steps acknowledged.
            deadline = time.monotonic() + 30
            mark = load.acks_since(0)
            while load.acks_since(mark) < 6 and time.monotonic() < deadline:
                time.sleep(0.1)
            spanning = spanning_wait_and_reset(load) if n == 0 else None
            event = load.failover(cut=n == 0)
            figures["promote_s"].append(event["promote_s"])
            figures["downtime_s"].append(load.first_write_after(event))
            figures["stuck"].append(load.progressed(event))
            if spanning is not None:
                figures["spanning"] = finish_spanning(load, spanning)
            if n + 1 < failovers:
                cluster.rejoin()
        load.finish_load()
        load.watch.send_signal(signal.SIGTERM)
        out, err = load.watch.communicate(timeout=HANG)
        figures["watch"] = (load.watch.returncode, out, err)
        figures.update(load.check())
        figures["states"] = cluster.primary.sql("SELECT id, status ->> 'overall', status ->> 'reset_stage' FROM etl_jobs "
                                                "ORDER BY id", dbname="etl")
        stuck = sorted(set().union(*figures["stuck"]))
        figures["stuck_detail"] = {
            "rows": cluster.primary.sql("SELECT id, status::text, next_run FROM etl_jobs WHERE id = ANY(%s)", dbname="etl",
                                        params=(stuck,)),
            "changes": cluster.primary.sql("SELECT * FROM failover_changes WHERE job_id = ANY(%s) ORDER BY id DESC "
                                           "LIMIT 12", dbname="etl", params=(stuck,)),
            "audit": cluster.primary.sql("SELECT at, job_id, from_state, to_state, token, command, pid, details::text "
                                         "FROM etlctl.audit WHERE job_id = ANY(%s) ORDER BY id DESC LIMIT 12",
                                         dbname="etl", params=(stuck,)),
            "exits": dict(load.exits)}
        figures["doctor_after"] = doctor(load)
        return figures
    finally:
        load.close()
        cluster.stop()


def spanning_wait_and_reset(load: Load) -> subprocess.Popen:
    """A wait-and-reset whose wait spans the failover: it has written its first deadline down, 8 s ahead
    (past the kill, which comes at most 6 s after the cut)."""
    load.sql("UPDATE etl_jobs SET last_run_finished_at = now() WHERE id = %s", load.spanning_job)
    proc = load.popen("wait-and-reset", load.spanning_job, "--delay", "8", "--backoff", "1", "--cooldown", "1")
    end = time.monotonic() + HANG
    while not load.sql("SELECT 1 FROM etl_jobs WHERE id = %s AND status ? 'reset_deadline'", load.spanning_job):
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()
        time.sleep(0.05)
    return proc


def finish_spanning(load: Load, proc: subprocess.Popen) -> tuple:
    out, err = proc.communicate(timeout=HANG)
    node = load.cluster.primary
    with psycopg.connect(node.conninfo("etl"), autocommit=True) as conn:
        state = conn.execute("SELECT status ->> 'overall' FROM etl_jobs WHERE id = %s", (load.spanning_job,)).fetchone()[0]
        resets = conn.execute("SELECT count(*) FROM etlctl.audit WHERE job_id = %s AND to_state = 'READY'",
                              (load.spanning_job,)).fetchone()[0]
    return proc.returncode, out, err, state, resets


def summary(figures: dict) -> str:
    keep = ("synchronous", "acknowledged", "lost", "downtime_s", "promote_s", "runs_started", "state_changes", "exits",
            "stuck")
    return "; ".join(f"{key}: {figures[key] if key != 'lost' else len(figures[key])}" for key in keep)


def etlctl(args, dsn: str | None, env: dict | None = None) -> tuple[int, str, str]:
    """etlctl as a process of its own, bounded (a hang past its timeouts fails the test)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ETLCTL_", "PG"))}
    full.update({"ETLCTL_DSN": dsn} if dsn else {}, **(env or {}))
    done = subprocess.run([sys.executable, "-m", "etlctl", *map(str, args)], env=full, text=True,
                          capture_output=True, timeout=HANG)
    return done.returncode, done.stdout, done.stderr


RUNNING = {"overall": "RUNNING", "token": "tok-run-0001", "steps": {s: dict.fromkeys(PHASES, "idle") for s in STEPS}}


def commit_latency(rounds: int = 300) -> dict[str, tuple[float, float]]:
    """Milliseconds per `step` (etlctl's own call, in one process: no start-up) on a cluster whose primary
    waits for its synchronous standby as synchronous_commit says: median and 95th percentile."""
    from etlctl.actions import flow
    from etlctl.store import connection
    from etlctl.store.settings import ConnectionSettings

    cluster = Cluster(synchronous=True)
    out = {}
    try:
        cluster.start()
        cluster.primary.sql("CREATE DATABASE etl")
        assert etlctl(["db", "init"], cluster.dsn("etl"))[0] == 0
        cluster.primary.sql("INSERT INTO tenants (name) VALUES ('acme')", dbname="etl")
        cluster.primary.sql("INSERT INTO etl_jobs (job_name, tenant_id, status) VALUES ('GitHub', 1, %s)", dbname="etl",
                            params=(Jsonb(RUNNING),))
        session = connection.open_session(ConnectionSettings(dsn=cluster.dsn("etl")), "step")
        try:
            for mode in ("remote_apply", "on", "remote_write", "local"):
                cluster.primary.sql(f"ALTER SYSTEM SET synchronous_commit = '{mode}'")
                cluster.primary.sql("SELECT pg_reload_conf()")
                session.reopen()  # a new session reads the new default
                times = []
                for n in range(rounds):
                    began = time.perf_counter()
                    flow.step(session, 1, step_name=STEPS[0], phase="extraction",
                              value=("running", "finished")[n % 2], token="tok-run-0001")
                    times.append((time.perf_counter() - began) * 1000)
                times.sort()
                out[mode] = (statistics.median(times), times[int(len(times) * 0.95)])
        finally:
            session.close()
        return out
    finally:
        cluster.stop()


def main() -> None:
    """The figures of BENCHMARKS.md: downtime over several failovers, what asynchronous replication
    lost, and the commit latency of a step with and without a synchronous standby."""
    rounds = int(os.environ.get("FAILOVERS", "5"))
    for synchronous in (True, False):
        figures = run_failovers(synchronous=synchronous, failovers=rounds)
        downtime = figures["downtime_s"]
        print(f"{'synchronous' if synchronous else 'asynchronous'}, {rounds} failovers: {summary(figures)}", flush=True)
        print(f"  downtime median {statistics.median(downtime):.2f}s, max {max(downtime):.2f}s "
              f"(the first after a cut replication: {downtime[0]:.2f}s); promote median "
              f"{statistics.median(figures['promote_s']):.2f}s; jobs stuck: {figures['stuck']}", flush=True)
    for mode, (median, p95) in commit_latency().items():
        print(f"step with synchronous_commit = {mode}: median {median:.2f} ms, p95 {p95:.2f} ms", flush=True)


if __name__ == "__main__":
    main()
