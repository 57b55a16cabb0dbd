"""`etlctl run` with a real RabbitMQ: it starts a due job and publishes its first message in the same
pass, and survives a broker restart (said once, not once per attempt), publishing what waited."""

from __future__ import annotations

import re
import signal

import pytest

from tests.helpers import etlctl_process, wait_until
from tests.relay_helpers import message_ids, published_ids, tenant_of_tier

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d "


@pytest.fixture
def tier(queues):
    return queues.tier()


@pytest.fixture
def tenant(db, tier):
    return tenant_of_tier(db, tier)


def start_run(db, broker, *args: str):
    return etlctl_process(["run", *args], db.dsn, {"ETLCTL_AMQP_URL": broker.url})


def queued(db) -> dict[int, int]:
    """Each job's outbox message id."""
    return {r["job_id"]: r["id"] for r in db.sql("SELECT job_id, id FROM etlctl.queue")}


def test_a_broker_restart_is_said_once_and_what_waited_is_published(db, broker, node_control, queues, tier, tenant):
    queue = f"extraction_queue_{tier}"
    first = db.job("Jira", tenant, db.integration(tenant), next_run=None)  # due now
    proc = start_run(db, broker, "--max-sleep", "1")  # a job inserted by SQL sends no NOTIFY: seen within 1 s
    try:
        assert wait_until(lambda: first in queued(db) and published_ids(db) == {queued(db)[first]}, timeout=30)
        node_control.stop_app()  # every client is disconnected
        try:
            second = db.job("Jira 2", tenant, db.integration(tenant), next_run=None)
            assert wait_until(lambda: second in queued(db), timeout=30)  # started without the broker
            assert wait_until(lambda: db.value("SELECT passes FROM etlctl.runners") >= 8, timeout=30)
            assert queued(db)[second] not in published_ids(db)  # its message waits in the outbox
        finally:
            node_control.start_app()
        queues.reconnect()
        assert wait_until(lambda: queued(db)[second] in published_ids(db), timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    notes = [re.sub(STAMP, "", line) for line in err.splitlines()]
    assert len(notes) == 4, err  # started, lost (once, over several passes and attempts), reconnected, terminated
    assert notes[1].startswith("etlctl: lost the message broker (") and notes[1].endswith("); reconnecting with backoff")
    assert notes[2].startswith("etlctl: reconnected to the message broker after ")
    assert notes[3] == "etlctl: terminated (SIGTERM); nothing half-written"
    actions = [re.sub(STAMP, "", line) for line in out.splitlines()]
    assert [line.split(" (")[0] for line in actions] == [
        f"started job {first}", f"published message {queued(db)[first]}",
        f"started job {second}", f"published message {queued(db)[second]}"]
    assert message_ids(queues.drain(queue)) == [queued(db)[first], queued(db)[second]]  # each once
