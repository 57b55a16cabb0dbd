"""Publishing to RabbitMQ: relay throughput against a bare pika loop, the latency from the commit of
schedule-next to the message in its queue (with and without `relay --follow`), and what the
completion check's look at the queues costs.

The broker is ETLCTL_TEST_AMQP_URL's, else a private node started here exactly as the tests start
theirs (tests/broker_node.py), under bench/.work/rabbitmq, and stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
import uuid

from bench.database import Server
from bench.measure import ETLCTL, PYTHON, REPO, WORK, Figure, Report, Stat, clean_env, interleaved, ms, run_timed

MESSAGES = 10_000
TIER = "bench"
QUEUE = f"extraction_queue_{TIER}"


@contextlib.contextmanager
def broker_url():
    """The broker to measure against, and nothing left behind."""
    external = os.environ.get("ETLCTL_TEST_AMQP_URL")
    if external:
        yield external
        return
    from tests import broker_node

    if not broker_node.installed():
        raise SystemExit(f"bench: the relay section needs RabbitMQ: {broker_node.INSTALL_COMMAND}, "
                         "or set ETLCTL_TEST_AMQP_URL")
    root = WORK / "rabbitmq"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    node = broker_node.BrokerNode(root)
    node.start()
    try:
        yield node.url
    finally:
        node.stop()


def channel(url: str):
    import pika

    return pika.BlockingConnection(pika.URLParameters(url)).channel()


def available() -> bool:
    from tests import broker_node

    return bool(os.environ.get("ETLCTL_TEST_AMQP_URL")) or broker_node.installed()


def bench_relay(report: Report, server: Server, reps: int, required: bool = True) -> None:
    print("relay", flush=True)
    if not required and not available():
        # `make bench` on a machine without RabbitMQ measures everything else; --only relay insists.
        print("  skipped: no RabbitMQ here (apt-get install rabbitmq-server, or set ETLCTL_TEST_AMQP_URL)", flush=True)
        report.text("relay", "Not measured in this run: no RabbitMQ on the machine (`apt-get install rabbitmq-server`, "
                             "or set ETLCTL_TEST_AMQP_URL).")
        return
    with broker_url() as url:
        dsn = server.fresh_database("bench_relay")
        try:
            throughput(report, server, dsn, url, max(3, reps // 6))
            latency(report, server, dsn, url, max(20, reps * 2))
            check_cost(report, server, dsn, url, reps)
        finally:
            server.drop("bench_relay")


# --- throughput ---------------------------------------------------------------------


def fill(conn) -> None:
    """MESSAGES pending messages of one RUNNING Jira run, each the size of a real first message."""
    conn.execute("INSERT INTO tenants (name, tier) VALUES ('bench-relay', %s) ON CONFLICT (name) DO NOTHING", (TIER,))
    tenant = conn.execute("SELECT id FROM tenants WHERE name = 'bench-relay'").fetchone()["id"]
    job = conn.execute("INSERT INTO etl_jobs (job_name, tenant_id, status) VALUES ('Bulk', %s, "
                       "'{\"overall\": \"RUNNING\", \"token\": \"6f1c0a2e-9b1d-4c3e-8f5a-2d7e4b6c9a10\", \"steps\": {}}') "
                       "RETURNING id", (tenant,)).fetchone()["id"]
    conn.execute(
        "INSERT INTO etlctl.queue (job_id, tenant_id, integration_id, token, step, queue_name, message) "
        "SELECT %(job)s, %(tenant)s, 3, '6f1c0a2e-9b1d-4c3e-8f5a-2d7e4b6c9a10', 'step_' || n, %(queue)s, "
        "       jsonb_build_object('tenant_id', %(tenant)s, 'integration_id', 3, 'job_id', %(job)s, "
        "           'type', 'step_' || n, 'provider', 'jira', 'token', '6f1c0a2e-9b1d-4c3e-8f5a-2d7e4b6c9a10', "
        "           'old_last_sync_date', '2026-11-28 09:15:00') "
        "FROM generate_series(1, %(n)s) n ORDER BY n",
        {"job": job, "tenant": tenant, "queue": QUEUE, "n": MESSAGES})


def throughput(report: Report, server: Server, dsn: str, url: str, reps: int) -> None:
    from etlctl.broker.publisher import json_body

    with server.connect("bench_relay") as conn:
        fill(conn)
        rows = conn.execute("SELECT id, message FROM etlctl.queue ORDER BY id").fetchall()
    bodies = WORK / "relay-bodies.jsonl"
    with open(bodies, "w", encoding="utf-8") as out:
        for row in rows:  # the very bytes the relay publishes, with their message ids
            out.write(json.dumps({"id": str(row["id"]), "body": json_body(row["message"]).decode()}) + "\n")
    control = channel(url)
    control.queue_declare(QUEUE, durable=True, arguments={"x-message-ttl": 86400000})

    def reset() -> None:
        control.queue_purge(QUEUE)
        with server.connect("bench_relay") as conn:
            conn.execute("UPDATE etlctl.queue SET published_at = NULL, published_by = NULL, attempts = 0, "
                         "last_attempt_at = NULL")
            conn.execute("VACUUM etlctl.queue")

    relay = [ETLCTL, "relay"]
    floor = [PYTHON, str(REPO / "bench" / "pika_floor.py"), url, QUEUE, str(bodies)]
    env = clean_env(ETLCTL_DSN=dsn, ETLCTL_AMQP_URL=url)
    times: dict[str, list[float]] = {"relay": [], "floor": []}
    for round_ in range(reps + 1):  # the first round warms up, unmeasured
        for name, argv in (("relay", relay), ("floor", floor)) if round_ % 2 == 0 else (("floor", floor), ("relay", relay)):
            reset()
            elapsed = run_timed(argv, env)
            depth = control.queue_declare(QUEUE, passive=True).method.message_count
            if depth != MESSAGES:
                raise SystemExit(f"bench: {name} left {depth} messages in {QUEUE}, not {MESSAGES}")
            if round_:
                times[name].append(elapsed)
    control.queue_purge(QUEUE)
    control.connection.close()
    rate = {name: Stat([MESSAGES / t for t in values]) for name, values in times.items()}
    relay_rate, floor_rate = rate["relay"].median, rate["floor"].median
    ratio = relay_rate / floor_rate
    report.add(Figure("relay", f"`etlctl relay`, {MESSAGES:,} messages (batches of 200, confirms)",
                      f"{relay_rate:,.0f} msg/s", f"{Stat(times['relay']).median:.2f} s a run; "
                      f"IQR {rate['relay'].q(0.25):,.0f}–{rate['relay'].q(0.75):,.0f} msg/s",
                      f"bare pika loop, same bodies and properties, confirm per message: {floor_rate:,.0f} msg/s "
                      f"({Stat(times['floor']).median:.2f} s)", ratio, "≥ 0.8x", ratio >= 0.8,
                      note=f"both are whole processes (start-up, connections, {MESSAGES:,} publishes); etlctl also "
                           "reads each batch from the outbox and records it there in the same transaction"))


# --- latency from the commit to the queue ------------------------------------------------------


class Arrivals:
    """Two listeners in this process: the start's NOTIFY (sent at its commit) and the message's delivery."""

    def __init__(self, dsn: str, url: str) -> None:
        self.dsn, self.url = dsn, url
        self.committed: dict[str, float] = {}  # job id -> when its start's NOTIFY arrived
        self.delivered: dict[str, float] = {}  # job id -> when its message arrived
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._notifies, daemon=True),
                        threading.Thread(target=self._messages, daemon=True)]
        for thread in self.threads:
            thread.start()
        time.sleep(1.0)

    def _notifies(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("LISTEN etl_job_status")
            while not self.stop.is_set():
                for note in conn.notifies(timeout=0.2):
                    self.committed[str(json.loads(note.payload)["job_id"])] = time.monotonic()

    def _messages(self) -> None:
        ch = channel(self.url)
        ch.queue_declare(QUEUE, durable=True, arguments={"x-message-ttl": 86400000})
        for method, _props, body in ch.consume(QUEUE, auto_ack=True, inactivity_timeout=0.2):
            if self.stop.is_set():
                break
            if method is not None:
                self.delivered[str(json.loads(body)["job_id"])] = time.monotonic()
        ch.connection.close()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


def latency(report: Report, server: Server, dsn: str, url: str, reps: int) -> None:
    with server.connect("bench_relay") as conn:
        tenant = conn.execute("SELECT id FROM tenants WHERE name = 'bench-relay'").fetchone()["id"]
        integration = conn.execute("INSERT INTO integrations (provider, type, tenant_id) VALUES ('Jira', 'Data', %s) "
                                   "RETURNING id", (tenant,)).fetchone()["id"]
        job = conn.execute("INSERT INTO etl_jobs (job_name, tenant_id, integration_id) VALUES ('Jira', %s, %s) "
                           "RETURNING id", (tenant, integration)).fetchone()["id"]
        conn.execute("UPDATE etlctl.queue SET published_at = now()")  # the throughput's messages are out of the way
    arrivals = Arrivals(dsn, url)
    results: dict[str, list[float]] = {}
    try:
        for mode in ("schedule-next publishes", "relay --follow publishes"):
            follow = None
            env = clean_env(ETLCTL_DSN=dsn, ETLCTL_AMQP_URL=url if mode.startswith("schedule") else None)
            if mode.startswith("relay"):
                follow = subprocess.Popen([ETLCTL, "relay", "--follow"], env=clean_env(ETLCTL_DSN=dsn, ETLCTL_AMQP_URL=url),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                time.sleep(2.0)
            samples = []
            try:
                for _ in range(reps):
                    with server.connect("bench_relay") as conn:
                        conn.execute("UPDATE etl_jobs SET status = '{\"overall\": \"READY\", \"steps\": {}}', "
                                     "next_run = NULL WHERE id = %s", (job,))
                    arrivals.committed.pop(str(job), None)
                    arrivals.delivered.pop(str(job), None)
                    run_timed([ETLCTL, "schedule-next"], env)
                    deadline = time.monotonic() + 30
                    while str(job) not in arrivals.delivered or str(job) not in arrivals.committed:
                        if time.monotonic() > deadline:
                            raise SystemExit(f"bench: no message within 30 s ({mode})")
                        time.sleep(0.002)
                    samples.append(arrivals.delivered[str(job)] - arrivals.committed[str(job)])
            finally:
                if follow is not None:
                    follow.terminate()
                    follow.communicate(timeout=30)
            results[mode] = samples
    finally:
        arrivals.close()
    for mode, samples in results.items():
        stat = Stat(samples)
        report.add(Figure("relay", f"commit of schedule-next → message in its queue, {mode}", ms(stat),
                          f"p99 {stat.q(0.99) * 1000:.1f} ms; {stat.spread()}; {len(samples)} runs", "-", None))


# --- the completion check's look at the queues --------------------------------------------------


def check_cost(report: Report, server: Server, dsn: str, url: str, reps: int) -> None:
    from psycopg.types.json import Jsonb

    from bench.database import JIRA, steps_doc

    token = str(uuid.uuid4())
    with server.connect("bench_relay") as conn:
        tenant = conn.execute("SELECT id FROM tenants WHERE name = 'bench-relay'").fetchone()["id"]
        job = conn.execute("INSERT INTO etl_jobs (job_name, tenant_id, status) VALUES ('Jira check', %s, %s) RETURNING id",
                           (tenant, Jsonb({"overall": "FINISHED", "token": token, "steps": steps_doc(JIRA, "finished")}))
                           ).fetchone()["id"]
    control = channel(url)
    queues = [f"{kind}_queue_{TIER}" for kind in ("extraction", "transform", "embedding")]
    for name in queues:
        control.queue_declare(name, durable=True, arguments={"x-message-ttl": 86400000})
        control.queue_purge(name)
    argv = [ETLCTL, "check", str(job), "--json"]
    runs = {"no broker": interleaved({"no broker": (argv, clean_env(ETLCTL_DSN=dsn)),
                                      "empty queues": (argv, clean_env(ETLCTL_DSN=dsn, ETLCTL_AMQP_URL=url))}, reps)}
    backlog = 100
    for name in queues:  # other runs' messages ahead in every queue: each is looked at and given back
        for n in range(backlog):
            control.basic_publish("", name, json.dumps({"job_id": n, "token": f"other-{n}"}).encode())
    deep = interleaved({"no broker": (argv, clean_env(ETLCTL_DSN=dsn)),
                        "deep queues": (argv, clean_env(ETLCTL_DSN=dsn, ETLCTL_AMQP_URL=url))}, reps)
    for name in queues:
        control.queue_delete(name)
    control.connection.close()
    base = Stat(runs["no broker"]["no broker"] + deep["no broker"])
    for label, samples in (("empty queues", runs["no broker"]["empty queues"]),
                           (f"{backlog} messages of other runs in each of the 3 queues", deep["deep queues"])):
        stat = Stat(samples)
        report.add(Figure("relay", f"`etlctl check JOB --json` with a broker: {label}", ms(stat), stat.spread(),
                          f"the same without a broker {ms(base)} ({base.spread()})", stat.median / base.median,
                          note=f"the look costs {(stat.median - base.median) * 1000:+.1f} ms: importing pika, "
                               "connecting, a passive declare per queue and a basic_get per message looked at"))
