"""doctor with a message broker configured: unreachable or refusing, a queue the outbox targets
missing, a queue no worker consumes; and nothing about the broker without one."""

from __future__ import annotations

import socket

import pytest

from tests.helpers import Cli
from tests.relay_helpers import broker_cli, fill_outbox, tenant_of_tier


@pytest.fixture
def tier(queues):
    return queues.tier()


@pytest.fixture
def tenant(db, tier):
    return tenant_of_tier(db, tier)


def findings(result) -> dict[str, dict]:
    return {f["code"]: f for f in result.json()["findings"]}


def test_a_missing_queue_then_a_queue_no_worker_consumes(db, broker, queues, tier, tenant):
    queue = f"extraction_queue_{tier}"
    fill_outbox(db, tenant, queue, 2)
    cli = broker_cli(db, broker)
    result = cli("doctor", "--json")
    assert result.exit_code == 3
    missing = findings(result)["queue_missing"]
    assert missing["summary"] == f"queue {queue} does not exist on {broker_settings_shown(broker)}: 2 messages wait to be published there"
    assert [f["command"] for f in missing["fix"]] == ["etlctl relay"]
    assert Cli(db.dsn)("doctor", "--json").json()["findings"] == []  # without a broker, doctor never asks one

    assert cli("relay").exit_code == 0  # declares it and publishes: now two messages wait for a worker
    idle = findings(cli("doctor", "--json"))["queue_no_consumer"]
    assert (idle["severity"], idle["summary"]) == ("problem", f"no worker consumes {queue}: 2 messages ready there")

    worker = queues.channel()
    worker.basic_qos(prefetch_count=1)
    worker.basic_consume(queue, lambda *args: None)  # a worker, busy with its first message
    assert cli("doctor").exit_code == 0


def test_an_unreachable_broker_is_a_problem(db, tenant, tier):
    fill_outbox(db, tenant, f"extraction_queue_{tier}", 3)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = Cli(db.dsn, env={"ETLCTL_AMQP_URL": f"amqp://etl:Sekr1t@127.0.0.1:{port}/pulse_etl"})("doctor", "--json")
    assert result.exit_code == 3
    found = findings(result)["broker_unreachable"]
    assert found["summary"] == (f"cannot reach the message broker (amqp://etl@127.0.0.1:{port}/pulse_etl): "
                                "connection refused; 3 messages wait in the outbox")
    assert "Sekr1t" not in result.stdout


def test_a_refused_login_says_where_to_look(db, broker, tenant):
    result = Cli(db.dsn, env={"ETLCTL_AMQP_URL": broker.url_for(password="nope-nope")})("doctor", "--json")
    found = findings(result)["broker_unreachable"]
    assert found["summary"].endswith("refused the login of user 'etlctl_test': wrong user name or password")
    assert found["cause"].startswith("the broker refuses etlctl's user or vhost")
    assert "nope-nope" not in result.stdout


def broker_settings_shown(broker) -> str:
    from etlctl.broker.settings import parse_url

    return parse_url(broker.url).shown
