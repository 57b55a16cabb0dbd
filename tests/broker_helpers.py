"""The tests' own pika client: what a worker sees. Independent of etlctl.broker, so that
a test of the publisher does not check etlctl with etlctl."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass

import pika

CONTRACT_ARGUMENTS = {"x-message-ttl": 86400000}


@dataclass(frozen=True)
class Received:
    body: bytes
    properties: pika.BasicProperties
    routing_key: str
    exchange: str
    redelivered: bool


class Queues:
    """Queues with names of their own for one test, deleted at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: pika.BlockingConnection | None = None
        self._channel = None
        self._confirming = None
        self._names: list[str] = []

    def channel(self):
        if self._conn is None or not self._conn.is_open:
            self._conn = pika.BlockingConnection(pika.URLParameters(self.url))
        if self._channel is None or not self._channel.is_open:
            self._channel = self._conn.channel()
        return self._channel

    def reconnect(self) -> None:
        """After a broker outage: the old connection is gone, though pika does not know it yet."""
        with contextlib.suppress(Exception):
            self._conn.close()
        self._conn = self._channel = self._confirming = None

    def name(self, label: str = "q") -> str:
        """A queue name nobody else uses (it need not exist yet); deleted after the test."""
        name = f"etlctl_test_{label}_{uuid.uuid4().hex[:8]}"
        self._names.append(name)
        return name

    def track(self, name: str) -> str:
        """Delete ``name`` after the test, and empty it now (it may be a real name, such as extraction_queue_premium)."""
        import pika.exceptions

        self._names.append(name)
        try:
            self.channel().queue_purge(name)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            self._channel = None
        return name

    def tier(self) -> str:
        """A tenant tier of this test's own: its extraction, transform and embedding queues
        (<kind>_queue_<tier>) are nobody else's, and are deleted after the test."""
        tier = f"t{uuid.uuid4().hex[:8]}"
        self._names += [f"{kind}_queue_{tier}" for kind in ("extraction", "transform", "embedding")]
        return tier

    def declare(self, name: str, arguments: dict | None = CONTRACT_ARGUMENTS, durable: bool = True) -> str:
        self.channel().queue_declare(name, durable=durable, arguments=arguments)
        return name

    def depth(self, name: str) -> int | None:
        """Messages ready in ``name``; None when there is no such queue."""
        import pika.exceptions

        try:
            return self.channel().queue_declare(name, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return None
            raise

    def put(self, name: str, body: bytes, **properties) -> None:
        """Publish one message as a worker or the existing system would; in the queue on return."""
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json", **properties)
        if self._confirming is None or not self._confirming.is_open:
            self.channel()
            self._confirming = self._conn.channel()
            self._confirming.confirm_delivery()  # basic_publish then waits for the broker's confirm
        self._confirming.basic_publish("", name, body, props, mandatory=True)

    def drain(self, name: str, limit: int = 100_000) -> list[Received]:
        """Take (and acknowledge) every message in ``name``, in order."""
        channel = self.channel()
        found = []
        while len(found) < limit:
            method, properties, body = channel.basic_get(name, auto_ack=False)
            if method is None:
                break
            channel.basic_ack(method.delivery_tag)
            found.append(Received(body, properties, method.routing_key, method.exchange, method.redelivered))
        return found

    def consume(self, name: str, count: int, timeout: float = 10.0) -> list[Received]:
        """Receive ``count`` messages the way a worker does (basic_consume, manual acks); fewer if
        none comes for ``timeout`` seconds."""
        channel = self.channel()
        found = []
        for method, properties, body in channel.consume(name, auto_ack=False, inactivity_timeout=timeout):
            if method is None:
                break
            channel.basic_ack(method.delivery_tag)
            found.append(Received(body, properties, method.routing_key, method.exchange, method.redelivered))
            if len(found) == count:
                break
        channel.cancel()
        return found

    def arguments_of(self, name: str, broker) -> dict:
        """The arguments a queue was declared with, as the broker lists them (needs rabbitmqctl)."""
        import json

        out = broker.ctl("list_queues", "-p", "pulse_etl", "name", "arguments", "durable", "--formatter", "json")
        row = next(r for r in json.loads(out) if r["name"] == name)
        # rabbitmqctl lists each argument as [name, AMQP type, value].
        return {"arguments": {key: value for key, _type, value in row["arguments"] or []}, "durable": row["durable"]}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            channel = self.channel()
            for name in self._names:
                channel.queue_delete(name)
        with contextlib.suppress(Exception):
            self._conn.close()
