"""Dead letters: read with the obvious call, and saying why they died in the same headers on
every transport."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from polybus import Codec, register_codec
from polybus.core.headers import (
    DEAD_AT,
    DEAD_ERROR,
    DEAD_MESSAGE,
    DEAD_QUEUE,
    DEAD_REASON,
    DEAD_TRACEBACK,
    RETRIES,
)
from polybus.testing.conformance._receive import drain, eventually

pytestmark = pytest.mark.requires("dead_letter")


class BrokenCodec(Codec):
    """Encodes fine; cannot decode (as a body another program wrote in a format we misread)."""

    content_type = "application/x-polybus-broken"

    def encode(self, value: Any) -> bytes:
        return repr(value).encode()

    def decode(self, data: bytes) -> Any:
        raise ValueError("not the format it claims")


register_codec("polybus-broken", BrokenCodec())


async def dead_letter_of(bus: Any, queue: str) -> Any:
    async with bus.work_queue(f"{queue}.dead").consume() as dead:
        msg = await dead.receive(timeout=15)
        await msg.ack()
    return msg


def assert_died(msg: Any, queue: str, reason: str, before_ms: int) -> None:
    assert msg.headers[DEAD_QUEUE] == queue
    assert msg.headers[DEAD_REASON] == reason
    assert before_ms - 1000 <= msg.headers[DEAD_AT] <= time.time() * 1000 + 1000


async def test_a_dead_letter_queue_is_read_with_the_obvious_call(connect):
    # Given a message rejected on a queue with the default dead-letter queue
    bus = await connect()
    orders = bus.work_queue("orders")
    await orders.send({"order": 1})
    async with orders.consume() as sub:
        await (await sub.receive(timeout=5)).reject()
    # When another bus reads "orders.dead" the obvious way
    reader = await connect()
    dead = reader.work_queue("orders.dead")
    # Then it is the dead-letter queue, not a new queue with a dead-letter queue of its own
    assert dead.dead_letter_queue is None
    async with dead.consume() as sub:
        assert await drain(sub, 1) == [{"order": 1}]


async def test_a_rejected_message_says_it_was_rejected(connect):
    bus = await connect()
    q = bus.work_queue("rejects")
    before = round(time.time() * 1000)
    await q.send("no", headers={"trace": "t-1"})
    async with q.consume() as sub:
        await (await sub.receive(timeout=5)).reject()
    msg = await dead_letter_of(bus, "rejects")
    assert_died(msg, q.name, "rejected", before)
    assert msg.body == "no" and msg.headers["trace"] == "t-1"


@pytest.mark.requires("ttl")
async def test_an_expired_message_says_it_expired(connect):
    bus = await connect()
    q = bus.work_queue("expiring")
    before = round(time.time() * 1000)
    await q.send("stale", ttl=0.05)
    await asyncio.sleep(0.3)
    assert await q.size() == 0
    msg = await dead_letter_of(bus, "expiring")
    assert_died(msg, q.name, "expired", before)
    assert msg.expiration is None  # a dead letter does not expire again


async def test_a_message_whose_retries_ran_out_says_what_the_handler_raised(connect):
    bus = await connect()
    q = bus.work_queue("failing")
    before = round(time.time() * 1000)

    def handle(msg: Any) -> None:
        raise KeyError(f"no customer {msg.body}")

    await q.worker(handle, retries=2)
    await q.send(42)
    msg = await dead_letter_of(bus, "failing")
    assert_died(msg, q.name, "retries-exhausted", before)
    assert msg.headers[RETRIES] == 2
    assert msg.headers[DEAD_ERROR] == "KeyError"
    assert "no customer 42" in msg.headers[DEAD_MESSAGE]
    assert "raise KeyError" in msg.headers[DEAD_TRACEBACK]
    assert msg.body == 42


async def test_an_undecodable_message_is_dead_lettered_without_calling_the_handler(connect):
    # Given a message whose body the worker cannot decode, then a good one
    sender = await connect(codec="polybus-broken")
    bus = await connect()
    q = bus.work_queue("garbled")
    before = round(time.time() * 1000)
    await sender.work_queue("garbled").send({"a": 1})
    await q.send("fine")
    handled: list[Any] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def handle(msg: Any) -> None:
        handled.append(msg.body)
        loop.call_soon_threadsafe(done.set)

    worker = await q.worker(handle)
    await asyncio.wait_for(done.wait(), 10)
    # Then the handler saw only the good one; the other is a dead letter saying why, at once
    msg = await dead_letter_of(bus, "garbled")
    assert handled == ["fine"]
    assert_died(msg, q.name, "undecodable", before)
    assert "not the format it claims" in msg.headers[DEAD_MESSAGE]
    assert RETRIES not in msg.headers
    await eventually(lambda: (worker.acked, worker.retried, worker.dead_lettered) == (1, 0, 1))


async def test_worker_counts_messages_acked_retried_and_dead_lettered(connect):
    # Given three messages, one of which always fails
    bus = await connect()
    q = bus.work_queue("counted-work")
    finished = asyncio.Event()
    loop = asyncio.get_running_loop()
    calls: list[Any] = []

    def handle(msg: Any) -> None:
        calls.append(msg.body)
        if len(calls) == 6:
            loop.call_soon_threadsafe(finished.set)
        if msg.body == "bad":
            raise RuntimeError("always")

    worker = await q.worker(handle, retries=3)
    await q.send_many(["a", "bad", "b"])
    await asyncio.wait_for(finished.wait(), 15)
    await dead_letter_of(bus, "counted-work")
    # Then the counts are of messages, not of handler calls
    await eventually(lambda: (worker.acked, worker.retried, worker.dead_lettered) == (2, 3, 1))
