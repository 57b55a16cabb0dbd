"""`etlctl demo`: the whole lifecycle, twice, on the embedded server.

It runs the real commands as separate processes, exactly as a person or cron
would, and tells its transcript (each command line with its output) to the
view it is given (:class:`etlctl.views.demo.Transcript`). It works in its own
database (`etlctl_demo` on the embedded server), recreated on every run, so it
never touches anyone's data.

    cycle: schedule-next starts the jobs -> a simulated worker claims queued
    extractions and reports phases with `step` -> `complete` -> the reset flow
    (`wait-and-reset` for Jira, `sweep` for GitHub) -> READY -> after next_run
    passes, schedule-next starts them again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from etlctl.store import clock
from etlctl.store import connection as db
from etlctl.store import embedded
from etlctl.store.settings import ConnectionSettings
from etlctl.errors import EtlctlError
from etlctl.core.rules import PHASES

DEMO_DATABASE = "etlctl_demo"
# Short timings, so a cycle takes seconds instead of minutes.
TIMINGS = {"ETLCTL_DELAY": "1", "ETLCTL_BACKOFF": "1,2,4", "ETLCTL_COOLDOWN": "3"}


class DemoFailed(EtlctlError):
    """demo stopped: `etlctl {command}` exited {code}: {output}"""


class Demo:
    def __init__(self, home, transcript) -> None:
        self.home = home
        self.transcript = transcript  # say(text), section(title), command(args, output)
        self.say = transcript.say
        self.section = transcript.section
        self.env: dict[str, str] = {}

    def etlctl(self, *args: str, expect=(0,), show: bool = True) -> str:
        """Run one etlctl command as its own process; print it and what it printed."""
        # Shown commands merge stderr into stdout, so the transcript keeps the order a terminal would.
        proc = subprocess.run([sys.executable, "-m", "etlctl", *args], env=self.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT if show else subprocess.PIPE)
        if show:
            self.transcript.command(args, proc.stdout)
        if proc.returncode not in expect:
            last = (proc.stderr or proc.stdout or "no output").strip().splitlines()[-1]
            raise DemoFailed(command=" ".join(args), code=proc.returncode, output=last)
        return proc.stdout

    # --- setting up ----------------------------------------------------------------

    def prepare(self) -> None:
        found = embedded.ensure_running(self.home, create=True)
        with db.connect(ConnectionSettings(dsn=found.conninfo("postgres")), "demo") as session:
            session.run("demo_drop_database")
            session.run("demo_create_database")
        dsn = found.conninfo(DEMO_DATABASE)
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("ETLCTL_", "PG"))}
        self.env = {**keep, **TIMINGS, "ETLCTL_DSN": dsn, "ETLCTL_HOME": str(self.home)}
        self.say(f"The demo works in its own database, {DEMO_DATABASE}, on the embedded server in {embedded.pgdata(self.home)}.")
        self.say(f"Every command below runs with ETLCTL_DSN=\"{dsn}\" and short timings: "
                 + ", ".join(f"{k}={v}" for k, v in TIMINGS.items()) + ".")
        self.section("A fresh database: etlctl creates its schema")
        self.etlctl("db", "init")
        with db.connect(ConnectionSettings(dsn=dsn), "demo") as session:
            self.jobs = {row["job_name"]: row["id"] for row in session.all("demo_seed")}
        self.section("A demo tenant with a Jira and a GitHub integration, one job each")
        self.etlctl("status")

    # --- one cycle -------------------------------------------------------------------

    def work_the_queue(self) -> None:
        """A worker that claims extraction messages and reports each phase, like the real ones."""
        self.say("-- a worker takes queued extractions and reports each phase with `etlctl step`")
        while True:
            raw = self.etlctl("queue", "claim", "--worker", "demo-worker", "--json", expect=(0, 3), show=False)
            message = json.loads(raw) if raw.strip() else None
            if not message:
                # Nothing queued: maybe a finished step's successor needs queueing.
                chained = self.etlctl("schedule-next", "--chain-grace", "0", show=False)
                if not chained.strip():
                    return
                for line in chained.splitlines():
                    self.transcript.command(("schedule-next", "--chain-grace", "0"), line)
                continue
            job, step, token = str(message["job_id"]), message["step"], message["token"]
            self.say(f"$ etlctl queue claim --worker demo-worker   (message {message['id']}: job {job} {step})")
            if step == "github_prs_commits_reviews_comments":
                self.say("  (the worker finds no new pull requests: the step stays idle, which GitHub's rule allows)")
            else:
                for phase in PHASES:
                    self.etlctl("step", job, step, phase, "running", "--token", token)
                    self.etlctl("step", job, step, phase, "finished", "--token", token)
            self.etlctl("queue", "done", str(message["id"]))

    def reset_with_sweep(self, names: list[str]) -> None:
        """Run the cron form of the reset flow until every job is READY again."""
        for _ in range(30):
            out = self.etlctl("sweep", show=False)
            if out.strip():
                self.transcript.command(("sweep",), out)
            states = [self.state(name) for name in names]
            if all(state == "READY" for state in states):
                return
            clock.sleep(1)
        raise DemoFailed(command="sweep", code=0, output="jobs did not come back to READY")

    def state(self, name: str) -> str:
        return json.loads(self.etlctl("status", str(self.jobs[name]), "--json", show=False))["overall"]

    def cycle(self, number: int, *, wait_and_reset: bool) -> None:
        self.section(f"Cycle {number}: schedule-next starts each due job and queues its first extraction")
        self.etlctl("schedule-next")
        self.etlctl("status", "Jira")
        self.work_the_queue()
        self.section(f"Cycle {number}: the embedding worker completes each job")
        for name, job_id in self.jobs.items():
            token = json.loads(self.etlctl("status", str(job_id), "--json", show=False))["token"]
            self.etlctl("complete", name, "--token", token)
        self.etlctl("check", "Jira")
        if wait_and_reset:
            self.section(f"Cycle {number}: Jira the way the browser tab did it, in one command")
            self.etlctl("wait-and-reset", "Jira")
            self.section(f"Cycle {number}: GitHub the cron way: `sweep` advances the same durable state each minute")
            self.reset_with_sweep(["GitHub"])
        else:
            self.section(f"Cycle {number}: `sweep` (what cron runs every minute) resets both")
            self.reset_with_sweep(list(self.jobs))
        self.etlctl("status")

    def wait_for_next_run(self) -> None:
        self.section("Between cycles: nothing is due until next_run passes")
        self.etlctl("schedule-next", "--dry-run", "--explain")
        waits = [json.loads(self.etlctl("status", str(j), "--json", show=False))["next_run"] for j in self.jobs.values()]
        self.say("-- waiting for next_run (schedule_interval_minutes is 1, the shortest the column allows)")
        while True:
            plan = json.loads(self.etlctl("schedule-next", "--dry-run", "--json", show=False))
            if len(plan["started"]) == len(self.jobs):
                return
            self.say(f"  {time.strftime('%H:%M:%S')}  not due yet (next_run {', '.join(w[11:19] for w in waits if w)})")
            clock.sleep(10)

    def run(self) -> None:
        self.prepare()
        self.cycle(1, wait_and_reset=True)
        self.wait_for_next_run()
        self.cycle(2, wait_and_reset=False)
        self.section("What happened, from the audit log")
        self.etlctl("history", "Jira", "--limit", "200")
        self.section("Done")
        self.say(f"Look around yourself: export ETLCTL_DSN=\"{self.env['ETLCTL_DSN']}\"; etlctl status")
        self.say("Stop the embedded server with: etlctl db stop")
