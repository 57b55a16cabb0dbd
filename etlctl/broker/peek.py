"""Whether a message of a run still waits in a queue, without taking anything away.

As the existing reset scheduler does: ``basic_get`` without acknowledging, one
message at a time, until the queue answers empty (never more than ``limit``),
stopping at the first one that carries the token; then a single
``basic_nack(multiple=True, requeue=True)`` gives every message taken back. RabbitMQ puts requeued messages back in their original
positions, so the order is kept; they come back flagged ``redelivered``. For the
few milliseconds of a peek, the messages taken are invisible to the workers, and
if etlctl dies meanwhile the broker requeues them when its connection closes.

Each ``basic_get`` is one round trip: with the default limit of 1000, a peek at a
deep queue costs at most about a thousand of them. A peek that stopped at the
limit says so (``complete`` is False): beyond it, nothing is known. Only messages
ready in the queue are seen: one a worker holds unacknowledged is invisible.
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
    depth: int | None  # messages ready as the peek began, as the broker counted them; None: no such queue
    complete: bool  # found, or looked at every ready message (the queue answered empty)

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
    looked_at, last_tag, found, exhausted = 0, None, False, False
    try:
        with broker.translating():
            # Until the queue answers empty, not until info.messages: the broker answers that count
            # ahead of requeues it has not finished (a peek just before this one), so it can be short.
            while looked_at < limit:
                method, _properties, body = channel.basic_get(queue, auto_ack=False)
                if method is None:
                    exhausted = True
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
    return PeekResult(queue, found=found, looked_at=looked_at, depth=info.messages, complete=found or exhausted)


@dataclass(frozen=True)
class ScanResult:
    queue: str
    tokens: frozenset[str]  # the run tokens of the messages looked at
    looked_at: int
    depth: int | None  # as in PeekResult; None: no such queue
    complete: bool  # looked at every ready message (the queue answered empty)

    def holds(self, token: str) -> bool | None:
        """True: a message of the run waits there; False: none does; None: not known (the scan stopped at its limit)."""
        if token in self.tokens:
            return True
        return False if self.complete else None


def scan(broker: BrokerConnection, queue: str, limit: int = DEFAULT_PEEK_LIMIT) -> ScanResult:
    """The run tokens of every message ready in ``queue`` (at most ``limit`` looked at), given back as
    :func:`peek` gives them back: one scan answers for many runs (a sweep peeks each queue once)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    info = broker.inspect_queue(queue)
    if info is None:
        return ScanResult(queue, frozenset(), looked_at=0, depth=None, complete=True)
    channel = broker.control_channel()
    looked_at, last_tag, exhausted, tokens = 0, None, False, set()
    try:
        with broker.translating():
            while looked_at < limit:
                method, _properties, body = channel.basic_get(queue, auto_ack=False)
                if method is None:
                    exhausted = True
                    break
                looked_at += 1
                last_tag = method.delivery_tag
                token = token_of(body)
                if token is not None:
                    tokens.add(token)
    finally:
        if last_tag is not None and channel.is_open:
            with broker.translating():
                channel.basic_nack(delivery_tag=last_tag, multiple=True, requeue=True)
    return ScanResult(queue, frozenset(tokens), looked_at=looked_at, depth=info.messages, complete=exhausted)


def token_of(body: bytes | None) -> str | None:
    """The ``token`` of a JSON object message, when it is a string."""
    if not body:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    token = document.get("token") if isinstance(document, dict) else None
    return token if isinstance(token, str) else None


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
