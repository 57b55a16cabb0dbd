"""Whether a message of a run still waits in a queue, without taking anything away.

As the existing reset scheduler does: ``basic_get`` without acknowledging, one
message at a time, up to the number of messages the queue held when the peek
began (never more than ``limit``), stopping at the first one that carries the
token; then a single ``basic_nack(multiple=True, requeue=True)`` gives every
message taken back. RabbitMQ puts requeued messages back in their original
positions, so the order is kept; they come back flagged ``redelivered``. For the
few milliseconds of a peek, the messages taken are invisible to the workers, and
if etlctl dies meanwhile the broker requeues them when its connection closes.

Each ``basic_get`` is one round trip: with the default limit of 1000, a peek at a
deep queue costs at most about a thousand of them. A peek that stopped at the
limit says so (``complete`` is False): beyond it, nothing is known.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from etlctl.broker.connection import BrokerConnection

DEFAULT_PEEK_LIMIT = 1000  # messages looked at, at most, per queue and peek
_PLAIN = re.compile(r"^[A-Za-z0-9_.-]+$")  # never escaped in JSON (run tokens are UUIDs)


@dataclass(frozen=True)
class PeekResult:
    queue: str
    found: bool  # a message carrying the token waits in the queue
    looked_at: int
    depth: int | None  # messages ready when the peek began; None when there is no such queue
    complete: bool  # found, or every message there at the start was looked at

    @property
    def exists(self) -> bool:
        return self.depth is not None


def peek(broker: BrokerConnection, queue: str, token: str, limit: int = DEFAULT_PEEK_LIMIT) -> PeekResult:
    """Whether a message whose JSON body has ``"token": token`` waits in ``queue``."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    info = broker.inspect_queue(queue)
    if info is None:
        return PeekResult(queue, found=False, looked_at=0, depth=None, complete=True)
    channel = broker.control_channel()
    looked_at, last_tag, found = 0, None, False
    try:
        with broker.translating():
            while looked_at < min(info.messages, limit):
                method, _properties, body = channel.basic_get(queue, auto_ack=False)
                if method is None:  # the workers took the rest meanwhile
                    break
                looked_at += 1
                last_tag = method.delivery_tag
                if carries_token(body, token):
                    found = True
                    break
    finally:
        if last_tag is not None and channel.is_open:
            with broker.translating():
                channel.basic_nack(delivery_tag=last_tag, multiple=True, requeue=True)
    complete = found or looked_at >= info.messages or looked_at < limit
    return PeekResult(queue, found=found, looked_at=looked_at, depth=info.messages, complete=complete)


def carries_token(body: bytes | None, token: str) -> bool:
    """A JSON object whose ``token`` is exactly ``token``; anything else is not a match."""
    if not body:
        return False
    # The cheap test first (most messages belong to other runs), for tokens JSON writes as they are.
    if _PLAIN.match(token) and token.encode() not in body:
        return False
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("token") == token
