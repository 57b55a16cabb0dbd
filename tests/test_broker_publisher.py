"""Publishing with confirms to a real RabbitMQ: what the broker confirms, nacks or returns is
reported per message, and a worker's pika consumer receives exactly what was sent."""

from __future__ import annotations

import json

import pika
import pytest

from etlctl.broker import connection
from etlctl.broker.publisher import CONTRACT_ARGUMENTS, Message, Publisher, Status
from etlctl.errors import BrokerError
from tests.helpers import wait_until

STAMP = 1_795_878_000  # 2026-11-28 09:00:00 UTC, as the database clock would give it


def jira_body(token: str = "6f1c0a2e-9b1d-4c3e-8f5a-2d7e4b6c9a10", job_id: int = 7) -> bytes:
    return json.dumps({"tenant_id": 1, "integration_id": 3, "job_id": job_id,
                       "type": "jira_projects_and_issue_types", "provider": "jira", "token": token,
                       "old_last_sync_date": "2026-11-28 09:15:00"}).encode()


@pytest.fixture
def publisher(broker_settings):
    with connection.connect(broker_settings) as broker:
        publisher = Publisher(broker)
        yield publisher
        publisher.close()


def test_a_confirmed_message_arrives_with_exactly_its_body_and_properties(publisher, queues):
    queue = queues.name("extraction_queue_premium")
    assert publisher.ensure_queue(queue).contract_arguments
    report = publisher.publish([Message(queue, jira_body(), "41", STAMP)])
    assert report.error is None
    assert [(o.message.message_id, o.status, o.reason, o.published) for o in report.outcomes] == [
        ("41", Status.CONFIRMED, None, True)]
    [received] = queues.consume(queue, 1)
    assert queues.depth(queue) == 0
    assert received.body == jira_body()
    assert (received.exchange, received.routing_key, received.redelivered) == ("", queue, False)
    p = received.properties
    assert (p.delivery_mode, p.content_type, p.message_id, p.app_id, p.timestamp) == (
        2, "application/json", "41", "etlctl", STAMP)
    # Nothing else is set: the workers' own messages carry no more than this.
    assert (p.headers, p.correlation_id, p.reply_to, p.expiration, p.type, p.user_id, p.priority,
            p.content_encoding) == (None,) * 8


def test_many_messages_in_a_small_window_arrive_all_and_in_order(broker_settings, queues):
    queue = queues.declare(queues.name("window"))
    messages = [Message(queue, jira_body(job_id=n), f"id-{n}", STAMP + n) for n in range(250)]
    with connection.connect(broker_settings) as broker:
        report = Publisher(broker, window=7).publish(messages)  # the window fills and drains many times
        again = Publisher(broker, window=7).publish(messages[:3])  # a second channel on the same connection
    assert report.error is None and again.error is None
    assert [o.message for o in report.outcomes] == messages
    assert {o.status for o in report.outcomes + again.outcomes} == {Status.CONFIRMED}
    received = queues.drain(queue)
    assert [(r.body, r.properties.message_id, r.properties.timestamp) for r in received] == [
        (m.body, m.message_id, m.timestamp) for m in messages + messages[:3]]


def test_a_nacked_message_is_reported_not_published(publisher, queues, node_control):
    queue = queues.declare(queues.name("full"))
    node_control.set_policy(queue, f"^{queue}$", {"max-length": 1, "overflow": "reject-publish"})
    try:
        assert wait_until(lambda: node_control.policy_of(queue) == queue, every=0.2)
        report = publisher.publish([Message(queue, jira_body(job_id=n), str(n), STAMP) for n in (1, 2, 3)])
    finally:
        node_control.clear_policy(queue)
    assert report.error is None
    assert [(o.message.message_id, o.status, o.reason) for o in report.outcomes] == [
        ("1", Status.CONFIRMED, None), ("2", Status.NACKED, "nacked by the broker"), ("3", Status.NACKED, "nacked by the broker")]
    assert [o.message.message_id for o in report.confirmed] == ["1"]
    assert [o.message.message_id for o in report.failed] == ["2", "3"]
    assert [r.properties.message_id for r in queues.drain(queue)] == ["1"]


def test_an_unroutable_message_is_reported_returned(publisher, queues):
    existing = queues.declare(queues.name("there"))
    missing = queues.name("not_there")  # never declared
    report = publisher.publish([Message(existing, b'{"a": 1}', "a", STAMP), Message(missing, b'{"b": 2}', "b", STAMP),
                                Message(existing, b'{"c": 3}', "c", STAMP)])
    assert report.error is None
    assert [(o.message.message_id, o.status, o.reason) for o in report.outcomes] == [
        ("a", Status.CONFIRMED, None),
        ("b", Status.RETURNED, "unroutable: NO_ROUTE (312)"),
        ("c", Status.CONFIRMED, None)]
    assert queues.depth(missing) is None  # publishing never creates a queue
    assert [r.body for r in queues.drain(existing)] == [b'{"a": 1}', b'{"c": 3}']


def test_declaring_with_the_contracts_arguments_twice_is_fine(publisher, queues, broker):
    queue = queues.name("declared")
    first = publisher.ensure_queue(queue)
    second = Publisher(publisher.broker).ensure_queue(queue)
    assert (first.name, first.messages, first.contract_arguments) == (queue, 0, True)
    assert (second.name, second.contract_arguments) == (queue, True)
    if broker.controllable:
        assert queues.arguments_of(queue, broker) == {"arguments": CONTRACT_ARGUMENTS, "durable": True}


def test_a_queue_with_other_arguments_is_checked_passively_and_left_alone(publisher, queues, broker):
    queue = queues.declare(queues.name("other_args"), arguments={"x-max-length": 10})
    queues.put(queue, b'{"waiting": 1}')
    in_flight = publisher.publish([Message(queue, b'{"before": 1}', "before", STAMP)])
    state = publisher.ensure_queue(queue)
    assert (state.name, state.messages, state.consumers, state.contract_arguments) == (queue, 2, 0, False)
    # Neither the publishing channel nor the broker's view of the queue suffered.
    after = publisher.publish([Message(queue, b'{"after": 1}', "after", STAMP)])
    assert [o.status for o in in_flight.outcomes + after.outcomes] == [Status.CONFIRMED, Status.CONFIRMED]
    assert publisher.ensure_queue(queues.name("next")).contract_arguments  # the control channel works again
    if broker.controllable:
        assert queues.arguments_of(queue, broker)["arguments"] == {"x-max-length": 10}
    assert [r.body for r in queues.drain(queue)] == [b'{"waiting": 1}', b'{"before": 1}', b'{"after": 1}']


def test_a_non_durable_queue_of_the_same_name_is_also_left_alone(publisher, queues):
    queue = queues.declare(queues.name("transient"), arguments=CONTRACT_ARGUMENTS, durable=False)
    assert not publisher.ensure_queue(queue).contract_arguments


def test_the_channel_closed_by_the_broker_is_reported_and_the_next_publish_recovers(publisher, queues):
    queue = queues.declare(queues.name("closing"))
    publisher.publish([Message(queue, b"{}", "warm", STAMP)])
    # An exchange that does not exist makes the broker close the channel (404), as a
    # permission refused on the default exchange would.
    publisher._channel.basic_publish(exchange="etlctl_test_no_such_exchange", routing_key=queue, body=b"{}")
    report = publisher.publish([Message(queue, b'{"n": 1}', "n1", STAMP)])
    assert isinstance(report.error, BrokerError)
    assert report.error.message.startswith("message broker error: the broker closed the publishing channel: "
                                           "NOT_FOUND - no exchange 'etlctl_test_no_such_exchange'")
    assert [o.status for o in report.outcomes] == [Status.UNCONFIRMED]
    retry = publisher.publish([Message(queue, b'{"n": 1}', "n1", STAMP)])
    assert (retry.error, [o.status for o in retry.outcomes]) == (None, [Status.CONFIRMED])


def test_nothing_to_publish_opens_nothing(publisher):
    assert publisher.publish([]).outcomes == []
    assert publisher._channel is None


def test_message_ids_must_be_unique_in_one_call(publisher):
    with pytest.raises(ValueError):
        publisher.publish([Message("q", b"{}", "same", STAMP), Message("q", b"{}", "same", STAMP)])


def test_the_bare_pika_loop_and_the_publisher_put_the_same_bytes_on_the_wire(publisher, queues, broker):
    """The benchmark's baseline publishes what the relay does; so must it, to compare like with like."""
    queue = queues.declare(queues.name("same"))
    publisher.publish([Message(queue, jira_body(), "1", STAMP)])
    channel = pika.BlockingConnection(pika.URLParameters(broker.url)).channel()
    channel.confirm_delivery()
    channel.basic_publish("", queue, jira_body(), pika.BasicProperties(
        delivery_mode=2, content_type="application/json", message_id="1", app_id="etlctl", timestamp=STAMP),
        mandatory=True)
    channel.connection.close()
    ours, bare = queues.drain(queue)
    assert (ours.body, str(ours.properties)) == (bare.body, str(bare.properties))
