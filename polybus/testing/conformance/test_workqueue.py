"""Work queue: waiting, sharing, acks, redelivery, prefetch, order, durability, dead letters."""

from __future__ import annotations

import asyncio
import inspect
import time

import pytest

from polybus import ReceiveTimeout
from polybus.testing.conformance._receive import (
    QUIET,
    assert_nothing_arrives,
    drain,
    receive_until_quiet,
)

# long enough that a transport redelivering by idle time alone would have done it
SLOW_CONSUMER_SECONDS = 2.5


async def test_message_waits_in_queue_until_a_consumer_takes_it(connect):
    # Given a message sent while nobody consumes
    sender = await connect()
    await sender.work_queue("hello").send("Hello World!")
    # When a consumer starts later, on another connection
    receiver = await connect()
    async with receiver.work_queue("hello").consume() as sub:
        msg = await sub.receive(timeout=5)
        await msg.ack()
    # Then it gets the message, as a first delivery
    assert msg.body == "Hello World!"
    assert msg.delivery_count == 1 and not msg.redelivered
    assert await sender.work_queue("hello").size() == 0


async def test_consumers_share_a_queue_round_robin_without_loss_or_duplicates(connect):
    bus = await connect()
    tasks = bus.work_queue("tasks")
    await tasks.declare()
    a, b = await connect(), await connect()
    async with (
        a.work_queue("tasks").consume(prefetch=1) as sub_a,
        b.work_queue("tasks").consume(prefetch=1) as sub_b,
    ):
        # When ten messages are sent to two equally fast consumers
        await tasks.send_many(list(range(10)))
        # the same work for both
        took_a, took_b = await asyncio.gather(
            receive_until_quiet(sub_a, quiet=QUIET * 2, ack=True, work=0.01),
            receive_until_quiet(sub_b, quiet=QUIET * 2, ack=True, work=0.01),
        )
        got_a = [msg.body for msg in took_a]
        got_b = [msg.body for msg in took_b]
    # Then each message went to exactly one of them, and both got a fair share
    assert sorted(got_a + got_b) == list(range(10))
    assert 3 <= len(got_a) <= 7, (got_a, got_b)


async def test_messages_from_one_publisher_arrive_in_publish_order(connect):
    bus = await connect()
    q = bus.work_queue("ordered")
    for i in range(50):
        await q.send(i)
    await q.send_many(list(range(50, 100)))
    async with q.consume(prefetch=10) as sub:
        assert await drain(sub, 100) == list(range(100))


async def test_unacked_message_is_redelivered_after_consumer_crash(connect, target):
    # Given a consumer that received a message and died before acking it
    victim = await connect()
    await victim.work_queue("jobs").send({"job": 1})
    sub = victim.work_queue("jobs").consume(prefetch=1)
    await sub.start()
    first = await sub.receive(timeout=5)
    assert first.delivery_count == 1
    await target.crash(victim)
    # When another consumer takes the queue
    survivor = await connect()
    async with survivor.work_queue("jobs").consume() as sub2:
        again = await sub2.receive(timeout=15)
        await again.ack()
    # Then it gets the same message, marked as redelivered
    assert again.body == {"job": 1}
    assert again.message_id == first.message_id
    assert again.redelivered


@pytest.mark.requires("delivery_count")
async def test_redelivery_increments_the_delivery_count(connect):
    bus = await connect()
    q = bus.work_queue("counted")
    await q.send("x")
    async with q.consume() as sub:
        for expected in (1, 2, 3):
            msg = await sub.receive(timeout=5)
            assert msg.delivery_count == expected
            assert msg.redelivered == (expected > 1)
            if expected < 3:
                await msg.nack(requeue=True)
        await msg.ack()


async def test_slow_consumer_keeps_its_message_without_duplicate(connect):
    # Given a slow but alive consumer holding a message
    bus = await connect()
    q = bus.work_queue("slow")
    await q.send("long job")
    slow = q.consume(prefetch=1)
    await slow.start()
    msg = await slow.receive(timeout=5)
    # When another consumer waits on the queue for a long time
    other = await connect()
    async with other.work_queue("slow").consume() as fast:
        with pytest.raises(ReceiveTimeout):
            await fast.receive(timeout=SLOW_CONSUMER_SECONDS)
        # Then it never gets a duplicate, and the slow consumer can still ack
        await msg.ack()
        await assert_nothing_arrives(fast)
    await slow.close()
    assert await q.size() == 0


async def test_nack_with_requeue_puts_the_message_back(connect):
    bus = await connect()
    q = bus.work_queue("requeue")
    await q.send("again")
    async with q.consume() as sub:
        msg = await sub.receive(timeout=5)
        await msg.nack(requeue=True)
        back = await sub.receive(timeout=5)
        await back.ack()
    assert back.body == "again" and back.redelivered


@pytest.mark.requires("dead_letter")
async def test_rejected_message_moves_to_the_dead_letter_queue(connect):
    bus = await connect()
    q = bus.work_queue("orders", dead_letter="orders.failed")
    await q.send({"order": 7})
    async with q.consume() as sub:
        await (await sub.receive(timeout=5)).reject()
        await assert_nothing_arrives(sub)
    dead = bus.work_queue("orders.failed", dead_letter=None)
    async with dead.consume() as sub:
        msg = await sub.receive(timeout=5)
        await msg.ack()
    assert msg.body == {"order": 7}


async def test_rejected_message_without_dead_letter_queue_is_dropped(connect):
    bus = await connect()
    q = bus.work_queue("nodlq", dead_letter=None)
    await q.send("bad")
    async with q.consume() as sub:
        await (await sub.receive(timeout=5)).nack(requeue=False)
        await assert_nothing_arrives(sub)
    assert await q.size() == 0


async def test_prefetch_bounds_unacked_messages_per_consumer(connect):
    # Given twenty messages and a greedy consumer with prefetch 3 that never acks
    bus = await connect()
    q = bus.work_queue("fair")
    await q.send_many(list(range(20)))
    hoarder = q.consume(prefetch=3)
    await hoarder.start()
    held = [await hoarder.receive(timeout=5) for _ in range(3)]
    # Then it cannot get a fourth while it holds three
    await assert_nothing_arrives(hoarder)
    # And another consumer gets the rest
    other = await connect()
    async with other.work_queue("fair").consume(prefetch=5) as sub:
        rest = await drain(sub, 17)
    assert sorted([m.body for m in held] + rest) == list(range(20))
    # When the hoarder acks one, it may take one more
    await held[0].ack()
    await assert_nothing_arrives(hoarder)  # the queue is empty now
    for msg in held[1:]:
        await msg.ack()
    await hoarder.close()


async def test_many_concurrent_publishers_lose_nothing(connect):
    buses = [await connect() for _ in range(4)]

    async def publish(bus, start):
        q = bus.work_queue("busy")
        await asyncio.gather(*(q.send(start + i) for i in range(50)))

    await asyncio.gather(*(publish(bus, n * 1000) for n, bus in enumerate(buses)))
    async with buses[0].work_queue("busy").consume(prefetch=50) as sub:
        got = await drain(sub, 200)
        await assert_nothing_arrives(sub)
    expected = sorted(n * 1000 + i for n in range(4) for i in range(50))
    assert sorted(got) == expected


@pytest.mark.requires("persistence")
async def test_durable_queue_and_persistent_messages_survive_a_broker_restart(
    connect, broker_control
):
    # Given persistent messages in a durable queue, and transient ones in a non-durable queue
    bus = await connect(broker_control.url)
    durable = bus.work_queue("durable-jobs")
    await durable.send_many(["a", "b", "c"])
    transient = bus.work_queue("scratch", durable=False, dead_letter=None)
    await transient.send("gone")
    # When the broker restarts
    await broker_control.restart()
    # Then the durable messages are still there, in order, and the non-durable queue is gone
    after = await connect(broker_control.url)
    async with after.work_queue("durable-jobs").consume(prefetch=10) as sub:
        assert await drain(sub, 3, timeout=20) == ["a", "b", "c"]
    assert await after.work_queue("scratch", durable=False, dead_letter=None).size() == 0


@pytest.mark.requires("persistence")
async def test_consumer_resumes_after_a_broker_restart(connect, broker_control):
    bus = await connect(broker_control.url)
    q = bus.work_queue("resume")
    async with q.consume(prefetch=5) as sub:
        await q.send("before")
        assert await drain(sub, 1) == ["before"]
        await broker_control.restart()
        deadline = time.monotonic() + 30
        while True:  # publishing may fail while the broker comes back; it must then raise
            try:
                await q.send("after")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        # an ack racing the restart may be lost: then "before" comes again, marked redelivered
        msg = await sub.receive(timeout=20)
        while msg.body == "before" and msg.redelivered:
            await msg.ack()
            msg = await sub.receive(timeout=20)
        await msg.ack()
        assert msg.body == "after"


@pytest.mark.requires("ttl")
async def test_expired_message_is_not_delivered_and_is_dead_lettered(connect):
    bus = await connect()
    q = bus.work_queue("ttl")
    await q.send("stale", ttl=0.1)
    await q.send("fresh")
    await asyncio.sleep(0.4)
    async with q.consume() as sub:
        assert await drain(sub, 1) == ["fresh"]
        await assert_nothing_arrives(sub)
    async with bus.work_queue("ttl.dead", dead_letter=None).consume() as dead:
        assert await drain(dead, 1) == ["stale"]


@pytest.mark.requires("ttl")
async def test_queue_message_ttl_expires_messages(connect):
    bus = await connect()
    q = bus.work_queue("short-lived", message_ttl=0.1, dead_letter=None)
    await q.send("old")
    await asyncio.sleep(0.4)
    assert await q.size() == 0


@pytest.mark.requires("priority")
async def test_higher_priority_messages_are_delivered_first(connect):
    bus = await connect()
    q = bus.work_queue("urgent", max_priority=9)
    for body, priority in [("low", 1), ("none", None), ("high", 9), ("mid", 5)]:
        await q.send(body, priority=priority)
    async with q.consume(prefetch=1) as sub:
        assert await drain(sub, 4) == ["high", "mid", "low", "none"]


async def test_worker_acks_on_return(connect):
    bus = await connect()
    q = bus.work_queue("handled")
    seen = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def handle(msg):
        seen.append(msg.body)
        if len(seen) == 5:
            loop.call_soon_threadsafe(done.set)

    await q.worker(handle, prefetch=2)
    await q.send_many(list(range(5)))
    await asyncio.wait_for(done.wait(), 10)
    assert sorted(seen) == list(range(5))
    await asyncio.sleep(0.2)
    assert await q.size() == 0


@pytest.mark.requires("dead_letter")
async def test_worker_retries_then_dead_letters_a_failing_message(connect):
    bus = await connect()
    q = bus.work_queue("flaky")
    attempts = []

    def handle(msg):
        attempts.append(msg.body)
        raise RuntimeError("boom")

    await q.worker(handle, retries=2)
    await q.send("poison")
    async with bus.work_queue("flaky.dead", dead_letter=None).consume() as dead:
        msg = await dead.receive(timeout=10)
        await msg.ack()
    assert msg.body == "poison"
    assert attempts == ["poison"] * 3  # the first try and two retries


async def test_closing_the_bus_returns_unprocessed_messages_to_the_queue(connect):
    # Given a worker that holds prefetched messages while busy with the first
    bus = await connect()
    q = bus.work_queue("graceful")
    await q.send_many(list(range(5)))
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []

    def handle(msg):
        handled.append(msg.body)
        loop.call_soon_threadsafe(started.set)
        time.sleep(0.3)

    await q.worker(handle, prefetch=5)
    await asyncio.wait_for(started.wait(), 10)
    # When the bus closes mid-work
    await bus.close()
    # Then the running handler finished and everything else is back in the queue
    other = await connect()
    async with other.work_queue("graceful").consume(prefetch=10) as sub:
        rest = await drain(sub, 5 - len(handled))
        await assert_nothing_arrives(sub)
    assert sorted(handled + rest) == list(range(5))


async def test_a_decorated_function_is_a_worker_and_stays_a_function(connect):
    # Given a handler decorated the same way in both APIs
    bus = await connect()
    q = bus.work_queue("decorated")
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    seen = []

    decorator = q.worker(prefetch=1)
    if inspect.isawaitable(decorator):  # the blocking API, seen through the test's adapter
        decorator = await decorator

    @decorator
    def handle(msg):
        seen.append(msg.body)
        loop.call_soon_threadsafe(done.set)

    # When a message is sent
    await q.send("job")
    # Then the worker ran it, and the function is still the function
    await asyncio.wait_for(done.wait(), 10)
    assert seen == ["job"] and handle.__name__ == "handle"
