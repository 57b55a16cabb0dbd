"""The chaos soak: `make soak` (not part of `make test`).

    make soak                                   # 240 s, a new seed (printed)
    make soak SOAK_SECONDS=60 SOAK_SEED=1234    # shorter, replaying the decisions of seed 1234

For SOAK_SECONDS, 17 loops drive one embedded PostgreSQL the way production
does, all at once, as processes (`python -m etlctl ...`):

    2 x schedule-next        2 x sweep                 6 x worker (claim a message, report every
    2 x wait-and-reset       1 x reset (some --force)     phase of every step, complete the run:
    2 x on-call (doctor, why, status, check, metrics,     four through etlctl, two as the existing
        history)                                          system's workers do, by direct SQL)
    1 x kills                1 x PostgreSQL restarts

The kills loop sends SIGKILL, SIGTERM or SIGINT to a random etlctl process;
the restarts loop restarts PostgreSQL three times (`-m fast`, `-m immediate`,
`-m fast`). A trigger of the soak's own (not etlctl's) logs every change of
a job's overall state or run token, whoever made it. At the end:

- every state change etlctl made has exactly one audit row, and every audit
  row of a state change one change (the trigger's log against the audit);
- no run was started twice (each token became RUNNING once);
- no acknowledged step was lost (each phase a worker was told "updated" or
  committed as finished is still finished in its run, while the run lasts);
- nothing exited 1.

The seed decides every random choice (waits, targets, signals, which worker
writes how); threads and the server's timing make no two runs identical, so a
seed replays the decisions, not the interleaving. Figures go to stdout; the
exit status is 0 when every invariant held.
"""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import psycopg
from psycopg.rows import dict_row

from etlctl.store import embedded
from tests.helpers import admin_connect, scratch_directory, start_server

FAST = ["--delay", "0.2", "--backoff", "0.2,0.4,0.8,1.5", "--cooldown", "0.3"]
PHASES = ("extraction", "transform", "embedding")
ORDER = {"idle": 0, "running": 1, "finished": 2}
LOG = """
CREATE TABLE soak_changes (
    id bigserial PRIMARY KEY, job_id int, from_state text, to_state text, old_token text, new_token text,
    app text, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION soak_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status ->> 'overall' IS DISTINCT FROM NEW.status ->> 'overall'
       OR OLD.status ->> 'token' IS DISTINCT FROM NEW.status ->> 'token' THEN
        INSERT INTO soak_changes (job_id, from_state, to_state, old_token, new_token, app)
        VALUES (NEW.id, OLD.status ->> 'overall', NEW.status ->> 'overall', OLD.status ->> 'token',
                NEW.status ->> 'token', current_setting('application_name'));
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER soak_log AFTER UPDATE ON etl_jobs FOR EACH ROW EXECUTE FUNCTION soak_log();
"""


class Soak:
    def __init__(self, seconds: float, seed: int) -> None:
        self.seconds, self.seed = seconds, seed
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.live: dict[int, tuple[subprocess.Popen, str]] = {}
        self.exits = collections.Counter()  # (command, exit status) -> how many
        self.signalled: dict[int, int] = {}  # pid -> the signal the kills loop sent it
        self.kills = collections.Counter()
        self.restarts: list[str] = []
        self.unexpected: list[str] = []  # an exit 1, with its stderr
        self.acked: list[tuple[int, str, str, str]] = []  # (job, token, step, phase) acknowledged as finished
        self.direct_writes = 0

    # --- processes ------------------------------------------------------------------------------

    def etlctl(self, *args, timeout: float = 120) -> tuple[int, str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETLCTL_", "PG"))}
        env["ETLCTL_DSN"] = self.dsn
        proc = subprocess.Popen([sys.executable, "-m", "etlctl", *[str(a) for a in args]], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with self.lock:
            self.live[proc.pid] = (proc, args[0])
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += "\n(soak: no answer within the timeout: killed)"
        with self.lock:
            self.live.pop(proc.pid, None)
            if proc.pid in self.signalled and "etlctl/" not in err and ("Traceback" in err or "Fatal Python" in err):
                # The signal landed while the interpreter was still starting (site, the import of etlctl's
                # package), before etlctl's first line: Python's own reaction, counted apart.
                self.exits[(args[0], "python start-up")] += 1
                return proc.returncode, out, err
            self.exits[(args[0], proc.returncode)] += 1
            if proc.returncode == 1:
                self.unexpected.append(f"etlctl {' '.join(map(str, args))} exited 1: {err.strip()}")
        return proc.returncode, out, err

    def sql(self, query: str, *params, app: str = "soak"):
        with psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row, application_name=app,
                             connect_timeout=5) as conn:
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else cur.rowcount

    def pause(self, low: float, high: float, rng: random.Random) -> None:
        self.stop.wait(rng.uniform(low, high))

    # --- the loops ---------------------------------------------------------------------------------

    def loop(self, name: str, body, rng: random.Random) -> None:
        while not self.stop.is_set():
            try:
                body(rng)
            except psycopg.Error:
                self.pause(0.2, 0.5, rng)  # the soak's own SQL during a restart: try again

    def schedule_next(self, rng):
        self.etlctl("schedule-next")
        self.pause(0.1, 0.6, rng)

    def sweep(self, rng):
        self.etlctl("sweep", *FAST)
        self.pause(0.1, 0.6, rng)

    def wait_and_reset(self, rng):
        finished = self.sql("SELECT id FROM etl_jobs WHERE status ->> 'overall' = 'FINISHED' ORDER BY random() LIMIT 1")
        if finished:
            self.etlctl("wait-and-reset", finished[0]["id"], *FAST)
        self.pause(0.1, 0.5, rng)

    def on_call(self, rng):
        """What a person runs meanwhile: read-only, and it must never fail either."""
        job = self.sql("SELECT id FROM etl_jobs ORDER BY random() LIMIT 1")[0]["id"]
        command = rng.choice([("doctor",), ("why", job), ("status", job), ("check", job), ("metrics",), ("history", job)])
        self.etlctl(*command)
        self.pause(0.2, 1.0, rng)

    def reset(self, rng):
        job = self.sql("SELECT id FROM etl_jobs ORDER BY random() LIMIT 1")[0]["id"]
        self.etlctl("reset", job, *(["--force"] if rng.random() < 0.25 else []))
        self.pause(0.5, 2.0, rng)

    def worker(self, name: str, direct: bool):
        def body(rng):
            code, out, _ = self.etlctl("queue", "claim", "--worker", name, "--json")
            if code != 0:
                self.pause(0.2, 0.8, rng)
                return
            message = json.loads(out)
            job, token = message["job_id"], message["token"]
            kind = self.sql("SELECT s.step FROM etlctl.kind_steps s JOIN etl_jobs j ON s.kind = etlctl.job_kind("
                            "j.job_name, (SELECT provider FROM integrations WHERE id = j.integration_id)) "
                            "WHERE j.id = %s ORDER BY s.position", job)
            for step in [row["step"] for row in kind]:
                for phase in PHASES:
                    for value in ("running", "finished"):
                        if self.stop.is_set():
                            return
                        if not self.report(job, token, step, phase, value, direct):
                            return  # the run is over (reset, forced): like a worker, drop it
                        self.pause(0.0, 0.05, rng)
            if direct:
                # The existing system's complete_etl_job(), as its workers write it (no audit, no NOTIFY).
                self.sql("""UPDATE etl_jobs SET last_run_finished_at = now(), last_updated_at = now(), next_run = NULL,
                                error_message = NULL, retry_count = 0,
                                status = status || jsonb_build_object('overall', 'FINISHED', 'reset_attempt', 0,
                                    'reset_deadline', to_char(now() + interval '0.2 seconds', 'YYYY-MM-DD"T"HH24:MI:SS.USOF'))
                            WHERE id = %s AND status ->> 'overall' = 'RUNNING' AND status ->> 'token' = %s""",
                         job, token, app="soak-worker")
            else:
                self.etlctl("complete", job, "--token", token, "--delay", "0.2")
            self.etlctl("queue", "done", message["id"])

        return body

    def report(self, job, token, step, phase, value, direct: bool) -> bool:
        if direct:
            # send_worker_status(): one jsonb_set on the row, guarded by the run.
            changed = self.sql("""UPDATE etl_jobs SET status = jsonb_set(status, ARRAY['steps', %s, %s], to_jsonb(%s::text))
                                  WHERE id = %s AND status ->> 'token' = %s AND status ->> 'overall' = 'RUNNING'""",
                               step, phase, value, job, token, app="soak-worker")
            with self.lock:
                self.direct_writes += 1
                if changed and value == "finished":
                    self.acked.append((job, token, step, phase))
            return bool(changed)
        code, out, _ = self.etlctl("step", job, step, phase, value, "--token", token, "--json")
        if code == 0 and value == "finished":
            with self.lock:
                self.acked.append((job, token, step, phase))
        return code in (0, 6, 7, 130, 143, -9)  # 4: the run is over

    def kills_loop(self, rng):
        self.pause(0.2, 1.2, rng)
        with self.lock:
            victims = [(pid, cmd) for pid, (proc, cmd) in self.live.items()]
        if not victims:
            return
        pid, cmd = rng.choice(sorted(victims))
        sig = rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        with self.lock:
            self.signalled[pid] = sig
            self.kills[(cmd, signal.Signals(sig).name)] += 1

    def restarts_loop(self):
        user = embedded.server_user()
        bin_dir = embedded.server_binaries(self.server.home, user)
        for n, mode in enumerate(("fast", "immediate", "fast"), 1):
            if self.stop.wait(self.seconds * n / 4 - (time.monotonic() - self.started)):
                return
            began = time.monotonic()
            embedded._run(f"pg_ctl restart -m {mode}", [bin_dir / "pg_ctl", "-D", embedded.pgdata(self.server.home),
                                                         "-w", "-t", 60, "-m", mode, "restart"], user, self.server.home)
            self.restarts.append(f"-m {mode} at {began - self.started:.0f}s ({time.monotonic() - began:.1f}s)")

    # --- the run ---------------------------------------------------------------------------------------

    def setup(self) -> None:
        self.folder = scratch_directory()
        self.server = start_server(self.folder / "pg")
        with admin_connect(self.server) as conn:
            # An immediate shutdown loses commits acknowledged under synchronous_commit = off (the test suite's
            # setting): an acknowledged step must survive a restart here.
            conn.execute("ALTER SYSTEM SET synchronous_commit = on")
            conn.execute("SELECT pg_reload_conf()")
            conn.execute("CREATE DATABASE soak")
        self.dsn = self.server.dsn("soak")
        code, _, err = self.etlctl("db", "init")
        assert code == 0, err
        self.sql(LOG)
        for t in range(4):
            tenant = self.sql("INSERT INTO tenants (name) VALUES (%s) RETURNING id", f"tenant-{t}")[0]["id"]
            for provider, name in (("Jira", "Jira"), ("GitHub", "GitHub"), ("Jira", "Jira 2"), ("GitHub", "GitHub 2")):
                integration = self.sql("INSERT INTO integrations (provider, type, tenant_id) VALUES (%s, 'Data', %s) "
                                       "RETURNING id", provider, tenant)[0]["id"]
                self.sql("INSERT INTO etl_jobs (job_name, tenant_id, integration_id, schedule_interval_minutes) "
                         "VALUES (%s, %s, %s, 0)", name, tenant, integration)

    def run(self) -> dict:
        self.setup()
        self.started = time.monotonic()
        loops = [("schedule-next", self.schedule_next)] * 2 + [("sweep", self.sweep)] * 2 + \
                [("wait-and-reset", self.wait_and_reset)] * 2 + [("reset", self.reset), ("kills", self.kills_loop)] + \
                [("on-call", self.on_call)] * 2 + \
                [(f"worker-{n}", self.worker(f"worker-{n}", direct=n >= 4)) for n in range(6)]
        threads = [threading.Thread(target=self.loop, args=(name, body, random.Random(self.rng.random())), name=name,
                                    daemon=True) for name, body in loops]
        threads.append(threading.Thread(target=self.restarts_loop, name="restarts", daemon=True))
        for thread in threads:
            thread.start()
        self.stop.wait(self.seconds)
        self.stop.set()
        for thread in threads:
            thread.join(timeout=150)
        elapsed = time.monotonic() - self.started
        return self.check(elapsed, len(threads))

    def check(self, elapsed: float, loops: int) -> dict:
        changes = self.sql("SELECT * FROM soak_changes ORDER BY id")
        audit = self.sql("SELECT job_id, from_state, to_state, token FROM etlctl.audit WHERE from_state IS DISTINCT FROM to_state")
        by_etlctl = collections.Counter(
            (c["job_id"], c["from_state"], c["to_state"], c["new_token"] if c["to_state"] == "RUNNING" else c["old_token"])
            for c in changes if c["app"] == "etlctl")
        audited = collections.Counter((a["job_id"], a["from_state"], a["to_state"], a["token"]) for a in audit)
        starts = collections.Counter(c["new_token"] for c in changes if c["to_state"] == "RUNNING")
        jobs = {r["id"]: r for r in self.sql("SELECT id, status FROM etl_jobs")}
        lost = [(job, token, step, phase) for job, token, step, phase in self.acked
                if jobs[job]["status"].get("token") == token
                and jobs[job]["status"].get("overall") in ("RUNNING", "FINISHED")
                and (jobs[job]["status"].get("steps") or {}).get(step, {}).get(phase) != "finished"]
        problems = []
        if by_etlctl != audited:
            problems.append(f"state changes without exactly one audit row: {dict(by_etlctl - audited)}; "
                            f"audit rows without their change: {dict(audited - by_etlctl)}")
        twice = {token: n for token, n in starts.items() if n > 1}
        if twice:
            problems.append(f"runs started twice: {twice}")
        if lost:
            problems.append(f"acknowledged steps lost: {lost[:10]}")
        if self.unexpected:
            problems.append(f"{len(self.unexpected)} exited 1: {self.unexpected[:5]}")
        exits = collections.Counter()
        for (_, code), n in self.exits.items():
            exits[str(code)] += n
        # Negative: killed by that signal. SIGKILL always; SIGTERM and SIGINT only while the interpreter was still
        # starting, before etlctl's first line took them over (Python's window: see etlctl/__main__.py).
        return {
            "seed": self.seed, "seconds": round(elapsed), "loops": loops, "processes": sum(self.exits.values()),
            "exit_statuses": dict(sorted(exits.items(), key=lambda item: (0, int(item[0])) if item[0].lstrip("-").isdigit()
                                                                    else (1, 0))), "kills": sum(self.kills.values()),
            "kills_by_signal": dict(collections.Counter(sig for (_, sig), n in self.kills.items() for _ in range(n))),
            "restarts": self.restarts, "runs_started": len(starts),
            "runs_reset": sum(1 for c in changes if c["to_state"] == "READY"),
            "state_changes": len(changes), "by_etlctl": sum(by_etlctl.values()), "audit_rows": len(audit),
            "acknowledged_finished_phases": len(self.acked), "direct_sql_writes": self.direct_writes,
            "problems": problems,
        }

    def close(self) -> None:
        with self.lock:
            for proc, _ in self.live.values():
                proc.kill()
        self.server.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def main() -> int:
    seconds = float(os.environ.get("SOAK_SECONDS", "240"))
    seed = int(os.environ.get("SOAK_SEED", random.randrange(2**32)))
    print(f"soak: {seconds:.0f}s, seed {seed} (SOAK_SEED={seed} replays its decisions)", flush=True)
    soak = Soak(seconds, seed)
    try:
        figures = soak.run()
    finally:
        soak.close()
    for key, value in figures.items():
        print(f"  {key}: {value}")
    if figures["problems"]:
        print("soak: FAILED", flush=True)
        return 1
    print("soak: every invariant held", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
