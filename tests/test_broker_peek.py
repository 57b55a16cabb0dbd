"""Peeking at a real queue for a run's token: found or not, and every message left where it was."""

from __future__ import annotations

import json

import pytest

from etlctl.broker import connection
from etlctl.broker.peek import PeekResult, carries_token, peek
from tests.helpers import wait_until

TOKEN = "6f1c0a2e-9b1d-4c3e-8f5a-2d7e4b6c9a10"


def body(token: str, n: int) -> bytes:
    return json.dumps({"tenant_id": 1, "job_id": n, "type": "jira_dev_status", "token": token}).encode()


def back_in_queue(queues, queue: str, count: int) -> None:
    """Wait for the broker to finish a requeue: it puts the messages back asynchronously, after the
    nack, and answers other connections meanwhile. Messages left unacknowledged would never come back
    while the peeking connection stays open, so this is also the proof that none were."""
    assert wait_until(lambda: queues.depth(queue) == count), (queues.depth(queue), count)


@pytest.fixture
def broker_conn(broker_settings):
    with connection.connect(broker_settings) as conn:
        yield conn


@pytest.fixture
def filled(queues):
    """A queue of 30 messages of other runs, with TOKEN's in 12th place, and a few odd ones."""
    queue = queues.declare(queues.name("embedding_queue_premium"))
    bodies = [body(f"other-{n}", n) for n in range(30)]
    bodies[11] = body(TOKEN, 11)
    bodies[3] = b"not json " + TOKEN.encode()  # the token, but not as a message's token
    bodies[5] = json.dumps({"previous_token": TOKEN, "token": "other"}).encode()
    bodies[7] = json.dumps([TOKEN]).encode()
    for n, raw in enumerate(bodies):
        queues.put(queue, raw, message_id=str(n))
    return queue, bodies


def test_a_waiting_message_is_found_and_everything_stays_in_order(broker_conn, queues, filled):
    queue, bodies = filled
    result = peek(broker_conn, queue, TOKEN)
    assert result == PeekResult(queue, found=True, looked_at=12, depth=30, complete=True)
    back_in_queue(queues, queue, 30)
    received = queues.drain(queue)
    assert [r.body for r in received] == bodies
    # What the broker does on a requeue, and no more: the peeked ones come back marked redelivered.
    assert [r.redelivered for r in received] == [True] * 12 + [False] * 18


def test_an_absent_token_is_not_found_after_looking_at_every_message(broker_conn, queues, filled):
    queue, bodies = filled
    result = peek(broker_conn, queue, "0b7e8f6a-0000-4000-8000-000000000000")
    assert result == PeekResult(queue, found=False, looked_at=30, depth=30, complete=True)
    assert result.exists
    back_in_queue(queues, queue, 30)
    assert [r.body for r in queues.drain(queue)] == bodies


def test_the_limit_bounds_a_peek_and_says_it_did_not_see_everything(broker_conn, queues, filled):
    queue, bodies = filled
    assert peek(broker_conn, queue, TOKEN, limit=5) == PeekResult(queue, found=False, looked_at=5, depth=30,
                                                                  complete=False)
    assert peek(broker_conn, queue, TOKEN, limit=12).found
    back_in_queue(queues, queue, 30)
    assert [r.body for r in queues.drain(queue)] == bodies


def test_peeks_one_after_another_on_the_same_connection(broker_conn, queues, filled):
    queue, bodies = filled
    for _ in range(3):
        assert peek(broker_conn, queue, TOKEN).found
        assert not peek(broker_conn, queue, "absent").found
    back_in_queue(queues, queue, 30)
    assert [r.body for r in queues.drain(queue)] == bodies


def test_back_to_back_peeks_at_a_deep_queue_each_see_every_message(broker_settings, queues):
    """The broker counts a queue's messages ahead of a requeue it has not finished: a peek right
    after another must not trust that count, or it misses the messages still on their way back."""
    queue = queues.declare(queues.name("deep"))
    bodies = [body(f"other-{n}", n) for n in range(399)] + [body(TOKEN, 399)]
    from etlctl.broker.publisher import Message, Publisher

    with connection.connect(broker_settings) as conn:
        assert len(Publisher(conn).publish([Message(queue, raw, str(n), 1) for n, raw in enumerate(bodies)]).confirmed) == 400
        for _ in range(4):
            result = peek(conn, queue, TOKEN)
            assert (result.found, result.looked_at, result.complete) == (True, 400, True)
        back_in_queue(queues, queue, 400)
    assert [r.body for r in queues.drain(queue)] == bodies


def test_an_empty_queue_and_a_missing_one(broker_conn, queues):
    empty = queues.declare(queues.name("empty"))
    assert peek(broker_conn, empty, TOKEN) == PeekResult(empty, found=False, looked_at=0, depth=0, complete=True)
    missing = queues.name("missing")
    result = peek(broker_conn, missing, TOKEN)
    assert result == PeekResult(missing, found=False, looked_at=0, depth=None, complete=True)
    assert not result.exists
    assert queues.depth(missing) is None  # a peek never creates a queue
    assert peek(broker_conn, empty, TOKEN).exists  # the control channel came back after the 404


@pytest.mark.parametrize("raw, expected", [
    (body(TOKEN, 1), True),
    (json.dumps({"token": TOKEN}, indent=2).encode(), True),
    (body("other", 1), False),
    (body(TOKEN.upper(), 1), False),
    (json.dumps({"token": TOKEN + "x"}).encode(), False),
    (json.dumps({"token": None}).encode(), False),
    (json.dumps({"nested": {"token": TOKEN}}).encode(), False),
    (b"", False),
    (None, False),
    (b"\xff\xfe" + TOKEN.encode(), False),
])
def test_what_carries_a_token(raw, expected):
    assert carries_token(raw, TOKEN) is expected


def test_a_token_json_escapes_is_still_found():
    token = "run/é\"1"
    assert carries_token(json.dumps({"token": token}).encode(), token)
    assert not carries_token(json.dumps({"token": "run/e"}).encode(), token)
