"""Failover: a real primary and a streaming standby (tests/cluster.py), the
primary stopped with ``-m immediate`` in the middle of the work, the standby
promoted; no mock, no proxy pretending to be a server.

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
asynchronous cluster and it does (test_async_loses_acknowledged_writes).

Checked on the new primary, from a trigger's log of every change to
``etl_jobs`` (made in the same transaction as the change, so it survives
exactly as the change does) and the audit:

- every step update and complete a writer was told succeeded (exit 0) is in
  the audit, with that writer's pid (synchronous: 0 lost; asynchronous: counted);
- no run started twice; every state change by etlctl has exactly one audit row;
- every job changes state after the failover; no command exits 1 or hangs;
- the downtime: from the kill to the first change committed on the new primary.

``python -m tests.test_failover`` measures the figures of BENCHMARKS.md
(several failovers, and the commit latency of a step with and without a
synchronous standby).
"""

from __future__ import annotations

import collections
import json
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
import pytest

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
            "exits": dict(load.exits), "killed": figures.get("killed")}
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


# --- the tests ------------------------------------------------------------------------------------


def assert_invariants(figures: dict) -> None:
    assert figures["unexpected"] == []
    assert figures["started_twice"] == {}
    assert figures["unaudited"] == {} and figures["audit_without_change"] == {}
    assert figures["stuck"] == [set()] * len(figures["stuck"]), (
        f"jobs with no change of state after the failover: {figures['stuck_detail']}")
    assert figures["acknowledged"] > 0 and figures["runs_started"] > 0


def assert_spanning(figures: dict, new_socket: str | None = None) -> None:
    code, _, err, state, resets = figures["spanning"]
    assert code == 0, err
    assert "etlctl: lost the database (" in err and "; reconnecting with backoff" in err
    assert "etlctl: reconnected to the database at " in err
    assert (state, resets) == ("READY", 1)


def assert_watch_followed(figures: dict, job: str = "Wex AD") -> None:
    code, out, err = figures["watch"]
    assert code == 143, err
    assert "etlctl: connection lost (" in err and "etlctl: reconnected; " in err
    # The spanning wait-and-reset's reset happened on the new primary only, after the reconnection.
    assert any("FINISHED → READY" in line and job in line for line in out.splitlines()), out


def test_synchronous_failover_under_load_loses_nothing_acknowledged(capsys):
    figures = run_failovers(synchronous=True)
    with capsys.disabled():
        print(f"\nfailover (synchronous): {summary(figures)}")
    assert figures["lost"] == []
    assert_invariants(figures)
    assert_spanning(figures)
    assert_watch_followed(figures)
    assert "Asynchronous replication" not in figures["doctor_before"][1]


def test_async_loses_acknowledged_writes(capsys):
    figures = run_failovers(synchronous=False)
    with capsys.disabled():
        print(f"\nfailover (asynchronous): {summary(figures)}; lost: {figures['lost']}; jobs now: {figures['states']}")
    code, said = figures["doctor_before"]
    assert code == 3 and "Asynchronous replication" in said
    assert "acknowledged writes can be lost on failover" in said
    # Measured: the writes acknowledged while the primary alone had them (its replication cut) are gone.
    assert isinstance(figures["lost"], list) and figures["acknowledged"] > 0
    assert len(figures["lost"]) > 0, "asynchronous replication lost nothing: the harness measured no loss"
    assert figures["started_twice"] == {}
    assert figures["unaudited"] == {} and figures["audit_without_change"] == {}
    assert_spanning(figures)


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




# --- one cluster, no load: read-only refusal, the deadline, doctor after a failover ------------------


def etlctl(args, dsn: str | None, env: dict | None = None) -> tuple[int, str, str]:
    """etlctl as a process of its own, bounded (a hang past its timeouts fails the test)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ETLCTL_", "PG"))}
    full.update({"ETLCTL_DSN": dsn} if dsn else {}, **(env or {}))
    done = subprocess.run([sys.executable, "-m", "etlctl", *map(str, args)], env=full, text=True,
                          capture_output=True, timeout=HANG)
    return done.returncode, done.stdout, done.stderr


RUNNING = {"overall": "RUNNING", "token": "tok-run-0001", "steps": {s: dict.fromkeys(PHASES, "idle") for s in STEPS}}


@pytest.fixture
def cluster():
    """A synchronous cluster with etlctl's schema and one RUNNING job (id 1)."""
    built = Cluster(synchronous=True)
    try:
        built.start()
        built.primary.sql("CREATE DATABASE etl")
        code, _, err = etlctl(["db", "init"], built.dsn("etl"))
        assert code == 0, err
        built.primary.sql("INSERT INTO tenants (name) VALUES ('acme')", dbname="etl")
        built.primary.sql("INSERT INTO etl_jobs (job_name, tenant_id, status) VALUES ('GitHub', 1, %s)", dbname="etl",
                          params=(Jsonb(RUNNING),))
        built.wait_streaming()
        yield built
    finally:
        built.stop()


def job_status(node, job: int = 1) -> dict:
    return node.sql("SELECT status FROM etl_jobs WHERE id = %s", dbname="etl", params=(job,))[0][0]


def audit_rows(node) -> int:
    return node.sql("SELECT count(*) FROM etlctl.audit", dbname="etl")[0][0]


def read_only_line(node) -> str:
    return (f"etlctl: the database server {node.sockets}:{node.port} is read-only (a standby, or "
            "default_transaction_read_only is on): nothing was written; point --dsn at the primary, or list every "
            "host with target_session_attrs=read-write\n")


def test_a_write_that_lands_on_a_standby_is_refused_and_writes_nothing(cluster):
    standby_first = cluster.dsn("etl", read_write=False, standby_first=True)
    step = ["step", 1, STEPS[0], "extraction", "finished", "--token", "tok-run-0001"]
    assert etlctl(step, standby_first) == (6, "", read_only_line(cluster.standby))
    # wait-and-reset refuses at once too, before any wait (its first write would come after one).
    cluster.primary.sql("UPDATE etl_jobs SET status = status || '{\"overall\": \"FINISHED\"}' WHERE id = 1",
                        dbname="etl")
    cluster.wait_streaming()
    assert etlctl(["wait-and-reset", 1, "--delay", "1h"], standby_first) == (6, "", read_only_line(cluster.standby))
    assert etlctl(["schedule-next"], cluster.standby.conninfo("etl")) == (6, "", read_only_line(cluster.standby))
    # watch only reads, but LISTEN is refused on a standby (it would never hear a change there).
    assert etlctl(["watch"], cluster.standby.conninfo("etl")) == (6, "", read_only_line(cluster.standby))
    assert job_status(cluster.primary)["steps"][STEPS[0]]["extraction"] == "idle"
    assert audit_rows(cluster.primary) == 0
    # The same write with every host and target_session_attrs=read-write lands on the primary.
    read_write = cluster.dsn("etl", standby_first=True)
    cluster.primary.sql("UPDATE etl_jobs SET status = status || '{\"overall\": \"RUNNING\"}' WHERE id = 1",
                        dbname="etl")
    code, out, err = etlctl(step, read_write)
    assert (code, err) == (0, ""), err
    assert job_status(cluster.primary)["steps"][STEPS[0]]["extraction"] == "finished"


def test_libpq_variables_name_every_host(cluster):
    """PGHOST=a,b (no DSN): the write lands on the primary whichever host is listed first."""
    b, a = cluster.standby, cluster.primary
    env = {"PGHOST": f"{b.sockets},{a.sockets}", "PGPORT": f"{b.port},{a.port}", "PGUSER": "postgres",
           "PGDATABASE": "etl", "PGTARGETSESSIONATTRS": "read-write"}
    step = ["step", 1, STEPS[0], "transform", "finished", "--token", "tok-run-0001"]
    assert etlctl(step, None, env)[0] == 0
    assert job_status(a)["steps"][STEPS[0]]["transform"] == "finished"
    env.pop("PGTARGETSESSIONATTRS")
    step[4] = "running"
    assert etlctl(step, None, env) == (6, "", read_only_line(b))


def test_reading_commands_work_on_a_standby(cluster):
    """status reads as of what the standby replayed; doctor says it is a standby (a note)."""
    standby = cluster.standby.conninfo("etl")
    code, out, err = etlctl(["status", 1], standby)
    assert (code, err) == (0, "") and "RUNNING" in out
    code, out, err = etlctl(["doctor"], standby)
    assert "Connected to a standby" in out and "this server is a standby, in recovery" in out, out + err


def test_a_commit_waiting_for_a_standby_that_is_gone_gives_up_at_the_deadline(cluster):
    """After a failover the new primary still names its lost synchronous standby: every commit waits
    for it. The server's statement_timeout does not end that wait; etlctl's deadline (statement plus
    connect timeout) does: exit 6, never a hang. doctor says why, and its fix ends the wait."""
    cluster.kill_primary()
    cluster.promote()
    new = cluster.primary
    new.sql(f"ALTER SYSTEM SET synchronous_standby_names = '{cluster.standby.name}'")
    new.sql("SELECT pg_reload_conf()")
    dsn = cluster.dsn("etl")
    code, out, err = etlctl(["doctor"], dsn)
    assert code == 3 and "Synchronous standby missing" in out, out + err
    assert f"synchronous_standby_names is '{cluster.standby.name}' but no standby confirms commits" in out
    step = ["--statement-timeout", "1s", "--connect-timeout", "2s", "step", 1, STEPS[1], "embedding", "running",
            "--token", "tok-run-0001"]
    code, out, err = etlctl(step, dsn)
    assert (code, out) == (6, "")
    assert err.startswith(f"etlctl: cannot reach the database ({new.sockets}:{new.port}): no answer for 3s "
                          "(--statement-timeout plus --connect-timeout): the server is frozen, or a commit waits for "
                          "a synchronous standby that is gone; etlctl closed the connection"), err
    # doctor's fix, as a superuser on the new primary: the waiting ends, writes work.
    new.sql("ALTER SYSTEM SET synchronous_standby_names = ''")
    new.sql("SELECT pg_reload_conf()")
    step[-3] = "finished"
    assert etlctl(step, dsn)[0] == 0
    assert etlctl(["doctor"], dsn)[1].count("Synchronous standby missing") == 0


def test_a_frozen_primary_is_given_up_after_the_connect_timeout(cluster):
    """A primary that accepts connections and never answers (SIGSTOP): each host gets --connect-timeout,
    then exit 6 naming each host and why."""
    pids = cluster.freeze_primary()
    try:
        code, out, err = etlctl(["--connect-timeout", "2s", "status", 1], cluster.dsn("etl"))
    finally:
        cluster.thaw(pids)
    a, b = cluster.primary, cluster.standby
    assert (code, out) == (6, "")
    assert err == (f"etlctl: cannot reach the database (postgres@{a.sockets}:{a.port},{b.sockets}:{b.port}/etl): "
                   f"no host accepted the connection: {a.sockets}:{a.port} (connection timeout expired); "
                   f"{b.sockets}:{b.port} (session is read-only)\n")


# --- doctor's judgment, without servers --------------------------------------------------------------

from etlctl.oncall.doctor_replication import replication_findings  # noqa: E402


def facts(commit="on", names="", standbys=(), in_recovery=False) -> dict:
    return {"in_recovery": in_recovery, "synchronous_commit": commit, "synchronous_standby_names": names,
            "standbys": [{"name": n, "state": "streaming", "sync_state": s} for n, s in standbys],
            "replay_age": 1.5 if in_recovery else None, "grant_monitor": "GRANT pg_monitor TO etl"}


@pytest.mark.parametrize("given, found", [
    (facts(), []),  # no standby, none expected: nothing to say
    (facts(standbys=[("b", "async")]), [("replication_async", "problem")]),
    (facts(commit="local", names="b", standbys=[("b", "sync")]), [("replication_async", "problem")]),
    (facts(commit="off", names="b", standbys=[("b", "sync")]), [("replication_async", "problem")]),
    (facts(commit="remote_apply", names="b", standbys=[("b", "sync")]), []),
    (facts(commit="on", names="ANY 1 (b, c)", standbys=[("b", "quorum"), ("c", "quorum")]), []),
    (facts(commit="remote_write", names="b", standbys=[("b", "sync")]), [("replication_remote_write", "note")]),
    (facts(names="b"), [("replication_standby_missing", "problem")]),
    (facts(names="b", standbys=[("c", "async")]), [("replication_standby_missing", "problem")]),
    (facts(commit="local", names="b"), []),  # commits do not wait for the missing standby
    (facts(standbys=[("b", None)]), [("replication_hidden", "note")]),
    (facts(names="b", standbys=[("b", None)]), [("replication_hidden", "note")]),
    (facts(in_recovery=True), [("standby_server", "note")]),
])
def test_doctor_judges_the_replication_mode(given, found):
    assert [(f.code, f.severity) for f in replication_findings(given)] == found


# --- the cron block carries every host ---------------------------------------------------------------


def test_cron_carries_a_multi_host_dsn_without_its_password():
    code, out, err = etlctl(["cron"], "postgresql://etl:sekret@a:5432,b:5433/etl?target_session_attrs=read-write")
    assert code == 0 and "sekret" not in out + err
    dsn = "ETLCTL_DSN='host=a,b port=5432,5433 dbname=etl user=etl target_session_attrs=read-write'"
    assert out.count(dsn) == 2, out
    assert "# Several hosts: each tick connects to the one that accepts writes (target_session_attrs=read-write).\n" in out


def test_cron_carries_multi_host_libpq_variables_and_says_when_a_tick_may_reach_a_standby():
    env = {"PGHOST": "a,b", "PGPORT": "5432,5433", "PGDATABASE": "etl", "PGPASSWORD": "sekret"}
    code, out, err = etlctl(["cron"], None, env)
    assert code == 0 and "sekret" not in out + err
    assert out.count("PGHOST=a,b PGPORT=5432,5433 PGDATABASE=etl ") == 2, out
    assert ("# Several hosts, but a tick may reach a standby first and be refused (exit 6): set "
            "PGTARGETSESSIONATTRS=read-write.\n") in out
    code, out, _ = etlctl(["cron"], None, {**env, "PGTARGETSESSIONATTRS": "read-write"})
    assert out.count("PGHOST=a,b PGPORT=5432,5433 PGDATABASE=etl PGTARGETSESSIONATTRS=read-write ") == 2, out


# --- relay --follow lands on the new primary ---------------------------------------------------------


class _ClusterAsServer:
    """The tests' TestDatabase, through the multi-host DSN: it reaches whichever node accepts writes."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def dsn(self, dbname: str) -> str:
        return self.cluster.dsn(dbname)


def test_relay_follow_reconnects_to_the_new_primary(cluster, broker, queues):
    from tests.helpers import TestDatabase, etlctl_process, wait_until
    from tests.relay_helpers import fill_outbox, message_ids, published_ids, tenant_of_tier

    tier = queues.tier()
    queue = f"extraction_queue_{tier}"
    db = TestDatabase(_ClusterAsServer(cluster), "etl")
    tenant = tenant_of_tier(db, tier, "relayed")
    proc = etlctl_process(["relay", "--follow", "--poll", "0.5"], cluster.dsn("etl"), {"ETLCTL_AMQP_URL": broker.url})
    try:
        before = fill_outbox(db, tenant, queue, 2)
        assert wait_until(lambda: published_ids(db) == set(before), timeout=30)
        db.conn.close()
        cluster.wait_streaming()  # the marks of what was published are on the standby too (synchronous anyway)
        cluster.kill_primary()
        cluster.promote()
        db = TestDatabase(_ClusterAsServer(cluster), "etl")
        after = fill_outbox(db, tenant, queue, 3, first=3)
        assert wait_until(lambda: published_ids(db) == set(before + after), timeout=30)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=HANG)
    lines = err.splitlines()
    assert lines[0].startswith("etlctl: lost the database (") and lines[0].endswith("); reconnecting with backoff")
    assert lines[1].startswith("etlctl: reconnected to the database after ")
    assert lines[-1] == "etlctl: terminated (SIGTERM); nothing half-written"
    assert message_ids(queues.drain(queue)) == before + after


# --- TCP keepalives: a host that vanished from the network is given up ---------------------------------


@pytest.mark.parametrize("dsn_sets, expected", [
    ("", {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5", "keepalives_count": "3",
          "tcp_user_timeout": "30000"}),
    (" keepalives_idle=60 tcp_user_timeout=0", {"keepalives": "1", "keepalives_idle": "60", "keepalives_interval": "5",
                                                "keepalives_count": "3", "tcp_user_timeout": "0"}),
])
def test_each_session_asks_for_keepalives_unless_the_dsn_sets_them(db, dsn_sets, expected):
    from etlctl.store import connection
    from etlctl.store.settings import ConnectionSettings

    session = connection.open_session(ConnectionSettings(dsn=db.dsn + dsn_sets), "test")
    try:
        given = session.conn.info.get_parameters()
    finally:
        session.close()
    assert {name: given.get(name) for name in expected} == expected


# --- a reset whose answer was lost ------------------------------------------------------------------


def test_wait_and_reset_recognises_its_own_reset_whose_answer_was_lost(cluster):
    """The reset's commit waits for a synchronous standby that is gone; the deadline gives the connection
    up (its answer lost). Once the standby is no longer waited for, the commit stands: wait-and-reset,
    reconnected, finds the job READY and its own audit row, and says it reset the job (not someone else)."""
    primary = cluster.primary
    done = {"overall": "FINISHED", "token": "tok-run-0001", "steps": {s: dict.fromkeys(PHASES, "finished") for s in STEPS}}
    primary.sql("UPDATE etl_jobs SET status = %s, last_run_finished_at = now() - interval '1 hour' WHERE id = 1",
                dbname="etl", params=(Jsonb(done),))
    cluster.wait_streaming()
    # A statement may wait 3 s: the reconnected session's reset, blocked on the row its lost one holds, waits
    # that long for the test to stop the waiting.
    proc = cluster_process(cluster, ["--statement-timeout", "3s", "--connect-timeout", "2s",
                                     "wait-and-reset", 1, "--delay", "0", "--cooldown", "2"])
    try:
        assert wait_for(lambda: job_status(primary).get("reset_stage") == "cooldown", proc)
        cluster.standby.stop("immediate")  # the reset's commit, at the end of the cooldown, waits for it
        # The waiting reset, and the reconnected session beside it.
        assert wait_for(lambda: primary.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'etlctl' "
                                            "AND wait_event = 'SyncRep'")[0][0] == 1, proc)
        assert wait_for(lambda: primary.sql("SELECT count(*) FROM pg_stat_activity "
                                            "WHERE application_name = 'etlctl'")[0][0] == 2, proc)
        primary.sql("ALTER SYSTEM SET synchronous_standby_names = ''")
        primary.sql("SELECT pg_reload_conf()")
        out, err = proc.communicate(timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.startswith("reset job 1 (GitHub, tenant acme) to READY; next run at "), out
    assert "etlctl: lost the database (no answer for 5s (--statement-timeout plus --connect-timeout)" in err
    assert "etlctl: reconnected to the database at " in err
    assert primary.sql("SELECT count(*) FROM etlctl.audit WHERE to_state = 'READY'", dbname="etl")[0][0] == 1


def cluster_process(cluster: Cluster, args) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETLCTL_", "PG"))}
    env["ETLCTL_DSN"] = cluster.dsn("etl")
    return subprocess.Popen([sys.executable, "-m", "etlctl", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = HANG) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.05)
    return False


if __name__ == "__main__":
    main()
