"""The completion check looks at the queues when a broker is configured: check, wait-and-reset and
sweep treat a run as not finished while a message of it waits in the tenant's extraction, transform
or embedding queue, as the existing reset scheduler does; every message stays where it was."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta, timezone

import pytest

from etlctl.core import lifecycle, rules
from tests.helpers import Cli, finished, wait_until
from tests.relay_helpers import broker_cli, tenant_of_tier

TOKEN = "6f1c0a2e-9b1d-4c3e-8f5a-2d7e4b6c9a10"


@pytest.fixture
def tier(queues):
    return queues.tier()


@pytest.fixture
def tenant(db, tier):
    return tenant_of_tier(db, tier)


def due_for_reset(token: str = TOKEN) -> dict:
    """FINISHED, every step finished, its cool-down over: the next sweep resets it."""
    past = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    return {**finished(token=token), "reset_stage": "cooldown", "reset_deadline": past, "reset_attempt": 0,
            "reset_token": token}


def message(job: int, token: str) -> bytes:
    return json.dumps({"tenant_id": 1, "job_id": job, "type": "jira_dev_status", "token": token}).encode()


# --- the rule takes the look's findings as data ---------------------------------------------------


def test_a_queued_message_makes_a_finished_document_not_finished_but_not_failed():
    status = finished(token=TOKEN)
    assert rules.evaluate({}, status).all_finished
    seen = rules.evaluate({}, status, queued=("a message of this run still waits in extraction_queue_premium",))
    assert (seen.all_finished, seen.failed, seen.reasons) == (
        False, False, ("a message of this run still waits in extraction_queue_premium",))
    now = datetime.now(timezone.utc)
    due = due_for_reset()
    assert lifecycle.decide(due, {}, now, lifecycle.Timings()).action == lifecycle.RESET
    waiting = lifecycle.decide(due, {}, now, lifecycle.Timings(), queued=("a message waits in q",))
    assert (waiting.action, waiting.attempt, waiting.reason) == (
        lifecycle.RETRY, 1, "check 1 of 5 not finished: a message waits in q")


# --- check ----------------------------------------------------------------------------------------


def test_check_is_not_finished_while_a_message_of_the_run_waits(db, broker, queues, tier, tenant):
    job = db.job("Jira", tenant, status=finished(token=TOKEN))
    queue = queues.declare(f"transform_queue_{tier}")
    waiting = [message(job, "another-run"), message(job, TOKEN), message(job, "yet-another")]
    for body in waiting:
        queues.put(queue, body)

    assert Cli(db.dsn)("check", job).exit_code == 0  # without a broker: the check as it always was
    looked = broker_cli(db, broker)("check", job, "--json")
    assert looked.exit_code == 3
    assert looked.json()["reasons"] == [f"a message of this run still waits in {queue}"]
    assert looked.stderr == (f"etlctl: job {job} (Jira, tenant acme) not finished: a message of this run still "
                             f"waits in {queue}\n")
    # Nothing was taken away, nor reordered.
    assert wait_until(lambda: queues.depth(queue) == 3)
    assert [r.body for r in queues.drain(queue)] == waiting
    # Once a worker took it: finished.
    for body in waiting[:1] + waiting[2:]:
        queues.put(queue, body)
    assert broker_cli(db, broker)("check", job).exit_code == 0


def test_a_peek_that_cannot_see_the_whole_queue_does_not_call_the_run_finished(db, broker_settings, queues, tier,
                                                                               tenant):
    from etlctl.actions import flow, peeking
    from etlctl.store import connection
    from etlctl.store.settings import ConnectionSettings

    job = db.job("Jira", tenant, status=finished(token=TOKEN))
    queue = queues.declare(f"extraction_queue_{tier}")
    for n in range(3):
        queues.put(queue, message(job, f"other-{n}"))
    with connection.connect(ConnectionSettings(dsn=db.dsn), "check") as session:
        with peeking.looking(broker_settings, limit=2) as look:
            result = flow.check(session, job, look=look)
    assert result.completion.reasons == (f"{queue} holds more than the 2 messages looked at: one of this run "
                                         "may wait there",)
    assert wait_until(lambda: queues.depth(queue) == 3)


def test_check_with_the_broker_down_exits_8(db, tenant):
    job = db.job("Jira", tenant, status=finished(token=TOKEN))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = Cli(db.dsn, env={"ETLCTL_AMQP_URL": f"amqp://etl@127.0.0.1:{port}/pulse_etl"})("check", job)
    assert (result.exit_code, result.stderr.splitlines()[-1]) == (
        8, f"etlctl: cannot reach the message broker (amqp://etl@127.0.0.1:{port}/pulse_etl): connection refused")
    # A job its steps already call unfinished never needs the broker.
    db.set_status(job, finished(token=TOKEN, jira_dev_status__embedding="running"))
    assert Cli(db.dsn, env={"ETLCTL_AMQP_URL": f"amqp://etl@127.0.0.1:{port}/pulse_etl"})("check", job).exit_code == 3


# --- sweep and wait-and-reset ----------------------------------------------------------------------


def test_sweep_keeps_a_run_with_a_queued_message_and_looks_at_each_queue_once(db, broker, queues, tier, tenant,
                                                                             monkeypatch):
    from etlctl.actions import peeking

    jobs = [db.job(f"Jira {n}", tenant, status=due_for_reset(f"run-{n}")) for n in range(5)]
    queue = queues.declare(f"embedding_queue_{tier}")
    queues.put(queue, message(jobs[2], "run-2"))
    scans = []
    real_scan = peeking.scan
    monkeypatch.setattr(peeking, "scan", lambda broker, name, limit: scans.append(name) or real_scan(broker, name, limit))

    result = broker_cli(db, broker)("sweep", "--json")
    assert result.exit_code == 0, result.stderr
    actions = {row["job_id"]: (row["action"], row["detail"]) for row in result.json()}
    assert actions.pop(jobs[2])[1].startswith(f"check 1 of 5 not finished: a message of this run still waits in {queue}; "
                                              "next check at ")
    assert {action for action, _ in actions.values()} == {"reset"}
    assert [db.status(j)["overall"] for j in jobs] == ["READY", "READY", "FINISHED", "READY", "READY"]
    assert sorted(scans) == sorted(peeking.queues_of(tier))  # three queues, each once, for five jobs
    assert wait_until(lambda: queues.depth(queue) == 1)


def test_sweep_with_the_broker_down_leaves_those_jobs_and_advances_the_others(db, tenant):
    waiting = db.job("Jira", tenant, status=due_for_reset())
    just_done = db.job("Jira 2", tenant, status=finished(token="t2"),
                       last_run_finished_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    before = db.status(waiting)
    result = Cli(db.dsn, env={"ETLCTL_AMQP_URL": f"amqp://etl@127.0.0.1:{port}/pulse_etl"})("sweep")
    assert result.exit_code == 8
    assert result.stderr == (f"etlctl: cannot reach the message broker (amqp://etl@127.0.0.1:{port}/pulse_etl): "
                             f"connection refused; 1 job whose steps are all finished ({waiting}) left as they are "
                             "until the queues can be looked at\n")
    assert db.status(waiting) == before
    assert db.status(just_done)["reset_stage"] == "check"  # its first check was scheduled: no broker needed


def test_wait_and_reset_retries_while_a_message_waits(db, broker, queues, tier, tenant):
    job = db.job("Jira", tenant, status=due_for_reset())
    queue = queues.declare(f"extraction_queue_{tier}")
    queues.put(queue, message(job, TOKEN))
    cli = broker_cli(db, broker)
    step = cli("wait-and-reset", job, "--dry-run")
    assert step.exit_code == 0, step.stderr
    assert step.stdout.startswith(f"job {job} (Jira, tenant acme): next: retry at ")
    assert step.stdout.endswith(f": check 1 of 5 not finished: a message of this run still waits in {queue}\n")
    assert wait_until(lambda: queues.depth(queue) == 1)
    queues.drain(queue)  # a worker took it
    done = cli("wait-and-reset", job)
    assert done.exit_code == 0, done.stderr
    assert db.status(job)["overall"] == "READY"


def test_a_look_outlives_a_connection_the_broker_dropped_between_two_checks(db, broker_settings, node_control, queues,
                                                                             tier, tenant):
    """`check --retry` and wait-and-reset keep their look across minutes with no heartbeat: a connection
    the broker dropped meanwhile is opened again, not reported as an outage."""
    from etlctl.actions import flow, peeking
    from etlctl.store import connection
    from etlctl.store.settings import ConnectionSettings

    job = db.job("Jira", tenant, status=finished(token=TOKEN))
    queue = f"embedding_queue_{tier}"
    with connection.connect(ConnectionSettings(dsn=db.dsn), "check") as session:
        with peeking.looking(broker_settings) as look:
            assert flow.check(session, job, look=look).completion.all_finished
            node_control.stop_app()
            node_control.start_app()
            queues.reconnect()
            queues.declare(queue)
            queues.put(queue, message(job, TOKEN))
            result = flow.check(session, job, look=look)
    assert result.completion.reasons == (f"a message of this run still waits in {queue}",)
