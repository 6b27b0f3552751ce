"""Retry policies: a failed message comes back after its backoff, with its attempt count, its id
and its headers; while it waits it holds no prefetch slot; what the policy does not retry is a
dead letter at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from polybus import RetryPolicy
from polybus.core.headers import DEAD_ERROR, DEAD_REASON, RETRIES

from .test_deadletters import dead_letter_of

pytestmark = pytest.mark.requires("dead_letter", "delay")


class Attempts:
    """What a handler saw: each call's body, retry count and time; ``done`` after ``count``."""

    def __init__(self, count: int) -> None:
        self.seen: list[tuple[Any, int, float, str | None, dict[str, Any]]] = []
        self.count = count
        self.done = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def record(self, msg: Any) -> None:
        retries = msg.headers.get(RETRIES, 0)
        self.seen.append((msg.body, retries, time.monotonic(), msg.message_id, msg.headers))
        if len(self.seen) == self.count:
            self._loop.call_soon_threadsafe(self.done.set)


async def test_a_failed_message_comes_back_after_its_backoff_with_its_attempt_count(connect):
    # Given a worker whose handler always fails, retried twice: after 0.2 s, then 0.4 s
    bus = await connect()
    q = bus.work_queue("backoff")
    attempts = Attempts(3)

    def handle(msg: Any) -> None:
        attempts.record(msg)
        raise TimeoutError("the payment service did not answer")

    policy = RetryPolicy(max_retries=2, backoff=0.2, factor=2, jitter=0)
    await q.worker(handle, retries=policy)
    await q.send({"order": 7}, headers={"trace": "t-7"}, message_id="order-7")
    await asyncio.wait_for(attempts.done.wait(), 15)
    # Then each attempt came no earlier than its backoff, the same message each time
    (_, r0, t0, _, _), (_, r1, t1, _, _), (_, r2, t2, _, _) = attempts.seen
    assert (r0, r1, r2) == (0, 1, 2)
    assert t1 - t0 >= 0.2 and t2 - t1 >= 0.4, (t1 - t0, t2 - t1)
    assert {(body["order"], mid, h["trace"]) for body, _, _, mid, h in attempts.seen} == {
        (7, "order-7", "t-7")
    }
    # And once they ran out it is a dead letter saying so
    dead = await dead_letter_of(bus, "backoff")
    assert (dead.headers[DEAD_REASON], dead.headers[RETRIES]) == ("retries-exhausted", 2)
    assert dead.headers[DEAD_ERROR] == "TimeoutError"


async def test_a_message_waiting_for_its_retry_does_not_hold_back_the_others(connect):
    # Given one worker with room for one message at a time, and a failure that retries late
    bus = await connect()
    q = bus.work_queue("not-blocked")
    attempts = Attempts(5)

    def handle(msg: Any) -> None:
        attempts.record(msg)
        if msg.body == "flaky" and msg.headers.get(RETRIES, 0) == 0:
            raise ConnectionError("try later")

    await q.worker(handle, prefetch=1, retries=RetryPolicy(backoff=0.5, jitter=0))
    # When the failing message is first in the queue
    await q.send_many(["flaky", "a", "b", "c"])
    await asyncio.wait_for(attempts.done.wait(), 15)
    # Then the others are handled while it waits, and it is handled after them
    assert [body for body, *_ in attempts.seen] == ["flaky", "a", "b", "c", "flaky"]
    assert attempts.seen[-1][2] - attempts.seen[0][2] >= 0.5


async def test_an_exception_the_policy_does_not_retry_is_a_dead_letter_at_once(connect):
    bus = await connect()
    q = bus.work_queue("no-retry")
    attempts = Attempts(1)

    def handle(msg: Any) -> None:
        attempts.record(msg)
        raise ValueError("malformed order")

    policy = RetryPolicy(max_retries=5, dead_letter_on=(ValueError,))
    worker = await q.worker(handle, retries=policy)
    await q.send("bad")
    dead = await dead_letter_of(bus, "no-retry")
    assert dead.headers[DEAD_REASON] == "not-retried"
    assert dead.headers[DEAD_ERROR] == "ValueError"
    assert RETRIES not in dead.headers
    assert len(attempts.seen) == 1
    assert (worker.retried, worker.dead_lettered) == (0, 1)
