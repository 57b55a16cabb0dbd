"""`etlctl demo`: the whole lifecycle, twice, on the embedded server.

It runs the real commands as separate processes, exactly as a person or cron
would, and tells its transcript (each command line with its output) to the
view it is given (:class:`etlctl.views.demo.Transcript`). It works in its own
database (`etlctl_demo` on the embedded server), recreated on every run, so it
never touches anyone's data.

    cycle: schedule-next starts the jobs -> a simulated worker takes the queued
    extractions and reports phases with `step` -> `complete` -> the reset flow
    (`wait-and-reset` for Jira, `sweep` for GitHub) -> READY -> after next_run
    passes, schedule-next starts them again.

With a message broker configured (ETLCTL_AMQP_URL or RABBITMQ_*, as for any
command), schedule-next publishes each message right after its commit and the
simulated worker receives it from RabbitMQ, from the demo tenant's own queue
(extraction_queue_etlctl_demo, which no real worker reads). Without one, the
messages wait in the outbox (etlctl.queue), where the worker claims them with
`etlctl queue claim`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from etlctl.actions.cron import executable
from etlctl.core import shell
from etlctl.store import clock
from etlctl.store import connection as db
from etlctl.store import embedded
from etlctl.store.settings import ConnectionSettings
from etlctl.errors import EtlctlError
from etlctl.core.rules import PHASES

DEMO_DATABASE = "etlctl_demo"
DEMO_QUEUE = "extraction_queue_etlctl_demo"  # the demo tenant's tier is etlctl_demo (sql/queries/demo.sql)
BROKER_VARIABLES = ("ETLCTL_AMQP_URL", "ETLCTL_AMQP_PASSWORD_FILE", "ETLCTL_AMQP_CONNECT_TIMEOUT", "ETLCTL_AMQP_HEARTBEAT")
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
        self.broker = None  # an open connection to the configured broker, if there is one that answers

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
        keep.update({k: os.environ[k] for k in BROKER_VARIABLES if k in os.environ})
        self.env = {**keep, **TIMINGS, "ETLCTL_DSN": dsn, "ETLCTL_HOME": str(self.home)}
        self.say(f"The demo works in its own database, {DEMO_DATABASE}, on the embedded server in {embedded.pgdata(self.home)}.")
        self.say(f"Every command below runs with ETLCTL_DSN=\"{dsn}\" and short timings: "
                 + ", ".join(f"{k}={v}" for k, v in TIMINGS.items()) + ".")
        self.find_broker()
        self.section("A fresh database: etlctl creates its schema")
        self.etlctl("db", "init")
        with db.connect(ConnectionSettings(dsn=dsn), "demo") as session:
            self.jobs = {row["job_name"]: row["id"] for row in session.all("demo_seed")}
        self.say("In its own database only, the demo turns chaining on for every step of the jira and github kinds "
                 "(etlctl.kind_steps.chain, the CHAIN column of `etlctl kinds`): its simulated worker does not queue "
                 "the next step itself as the real workers do, so schedule-next queues it. It is off as etlctl seeds "
                 "a real database.")
        self.section("A demo tenant with a Jira and a GitHub integration, one job each")
        self.etlctl("status")

    def find_broker(self) -> None:
        """Say where the messages go: a broker that answers, or the outbox."""
        from etlctl.broker import connection as broker_connection
        from etlctl.broker import settings as broker_settings

        outbox = ("the messages wait in the outbox, the table etlctl.queue (`etlctl queue ls`), where the demo's "
                  "worker claims them with `etlctl queue claim`")
        try:
            found = broker_settings.resolve()
            if found is not None:
                self.broker = broker_connection.connect(found, "etlctl demo")
        except EtlctlError as exc:
            # One true sentence: a broker is configured, it does not answer, so the demo runs as without one
            # (and its commands get no broker settings, so none of them tries it again).
            self.say(f"The message broker configured does not answer ({exc.message}): the demo goes on without "
                     f"it: {outbox}.")
            for name in BROKER_VARIABLES + tuple(broker_settings.EXISTING_SYSTEM_DEFAULTS):
                self.env.pop(name, None)
            return
        if self.broker is not None:
            self.say(f"A message broker is configured ({found.shown}): schedule-next publishes each message right "
                     f"after its commit, to the demo tenant's own queue {DEMO_QUEUE} (no real worker reads it), "
                     "and the demo's worker receives it from there.")
        else:
            self.say(f"No message broker is configured (ETLCTL_AMQP_URL, or RABBITMQ_HOST...): {outbox}; "
                     "`etlctl relay` would publish them to RabbitMQ.")

    # --- one cycle -------------------------------------------------------------------

    def next_message(self) -> dict | None:
        """The next extraction message for the worker: received from RabbitMQ, or claimed from the outbox."""
        if self.broker is not None:
            from etlctl.broker.receive import receive_one

            received = receive_one(self.broker, DEMO_QUEUE)
            if received is None:
                return None
            message = json.loads(received.body)
            self.say(f"-- a worker receives message {received.message_id} from {DEMO_QUEUE}: "
                     f"{received.body.decode()}")
            return {"id": received.message_id, "job_id": message["job_id"], "step": message["type"],
                    "token": message["token"], "claimed": False}
        raw = self.etlctl("queue", "claim", "--worker", "demo-worker", "--json", expect=(0, 3), show=False)
        message = json.loads(raw) if raw.strip() else None
        if message:
            self.say(f"$ etlctl queue claim --worker demo-worker   (message {message['id']}: job {message['job_id']} "
                     f"{message['step']})")
            message["claimed"] = True
        return message

    def work_the_queue(self) -> None:
        """A worker that takes extraction messages and reports each phase, like the real ones."""
        self.say("-- a worker takes queued extractions and reports each phase with `etlctl step`")
        while True:
            message = self.next_message()
            if not message:
                # Nothing queued: maybe a finished step's successor needs queueing.
                chained = self.etlctl("schedule-next", "--chain-grace", "0", show=False)
                if not chained.strip():
                    return
                for line in chained.splitlines():
                    self.transcript.command(("schedule-next", "--chain-grace", "0"), line)
                continue
            job, step, token = str(message["job_id"]), message["step"], message["token"]
            if step == "github_prs_commits_reviews_comments":
                self.say("  (the worker finds no new pull requests: the step stays idle, which GitHub's rule allows)")
            else:
                for phase in PHASES:
                    self.etlctl("step", job, step, phase, "running", "--token", token)
                    self.etlctl("step", job, step, phase, "finished", "--token", token)
            if message["claimed"]:
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
        try:
            self.prepare()
            self.cycle(1, wait_and_reset=True)
            self.wait_for_next_run()
            self.cycle(2, wait_and_reset=False)
            self.section("The outbox: what each message became")
            self.etlctl("queue", "ls")
            self.section("What happened, from the audit log")
            self.etlctl("history", "Jira", "--limit", "200")
        finally:
            if self.broker is not None:
                self.broker.close()
        self.section("Done")
        # The etlctl that ran the demo (.venv/bin/etlctl after `make demo`, seldom on PATH), quoted for sh.
        here = shell.command(*executable())
        self.say(f"Look around yourself: export ETLCTL_DSN={shell.quote(self.env['ETLCTL_DSN'])}; {here} status")
        self.say(f"Stop the embedded server with: {here} db stop --dsn embedded")
