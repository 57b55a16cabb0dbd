"""Taking a message off a queue as a worker does (``basic_get``, then ``basic_ack``): for the demo's
simulated worker. etlctl itself never consumes the workers' queues; it only peeks (peek.py)."""

from __future__ import annotations

from dataclasses import dataclass

from etlctl.broker.connection import BrokerConnection


@dataclass(frozen=True)
class Received:
    queue: str
    body: bytes
    message_id: str | None


def receive_one(broker: BrokerConnection, queue: str) -> Received | None:
    """The next message of ``queue``, acknowledged (gone from the queue); None when it is empty or missing."""
    if broker.inspect_queue(queue) is None:
        return None
    channel = broker.control_channel()
    with broker.translating():
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            return None
        channel.basic_ack(method.delivery_tag)
    return Received(queue, body, properties.message_id)
