"""Pub/sub (fanout): everyone subscribed gets everything; named subscriptions keep and share."""

from __future__ import annotations

import asyncio

import pytest

from polybus.testing.conformance._receive import (
    QUIET,
    assert_nothing_arrives,
    drain,
    receive_until_quiet,
)


async def test_every_subscriber_gets_every_message(connect):
    bus = await connect()
    logs = bus.pubsub("logs")
    other = await connect()
    async with logs.subscribe() as one, other.pubsub("logs").subscribe() as two:
        for i in range(5):
            await logs.publish(f"line {i}")
        expected = [f"line {i}" for i in range(5)]
        assert await drain(one, 5, ack=False) == expected
        assert await drain(two, 5, ack=False) == expected


async def test_transient_subscription_gets_only_what_is_published_while_subscribed(connect):
    bus = await connect()
    logs = bus.pubsub("radio")
    await logs.publish("before anyone listens")
    async with logs.subscribe() as sub:
        await logs.publish("live")
        assert await drain(sub, 1, ack=False) == ["live"]
        await assert_nothing_arrives(sub)
    await logs.publish("after the listener left")
    async with logs.subscribe() as late:
        await assert_nothing_arrives(late)


async def test_transient_subscription_queue_is_deleted_when_the_subscriber_leaves(connect, target):
    bus = await connect()
    logs = bus.pubsub("ephemeral")
    async with logs.subscribe() as sub:
        assert await target.queue_exists(bus, sub.queue)
    assert not await target.queue_exists(bus, sub.queue)


async def test_transient_subscription_queue_is_deleted_when_its_connection_dies(connect, target):
    listener = await connect()
    sub = listener.pubsub("crashy").subscribe()
    await sub.start()
    await target.crash(listener)
    observer = await connect()
    deadline = asyncio.get_running_loop().time() + 15
    while await target.queue_exists(observer, sub.queue):  # a broker may reap it a bit later
        assert asyncio.get_running_loop().time() < deadline, "transient queue outlived its owner"
        await asyncio.sleep(0.2)


async def test_transient_subscriptions_have_distinct_queues(connect):
    bus = await connect()
    logs = bus.pubsub("distinct")
    async with logs.subscribe() as a, logs.subscribe() as b:
        assert a.queue != b.queue


async def test_named_subscription_keeps_messages_while_its_consumers_are_away(connect):
    bus = await connect()
    events = bus.pubsub("events")
    # Given a named subscription that existed once
    async with events.subscribe(name="audit") as sub:
        await events.publish("first")
        assert await drain(sub, 1) == ["first"]
    # When messages are published while nobody consumes it
    await events.publish("while away 1")
    await events.publish("while away 2")
    # Then they wait for the next consumer of that name, on any connection
    later = await connect()
    async with later.pubsub("events").subscribe(name="audit") as sub:
        assert await drain(sub, 2) == ["while away 1", "while away 2"]


async def test_consumers_of_one_named_subscription_share_its_messages(connect):
    bus = await connect()
    events = bus.pubsub("orders")
    a, b = await connect(), await connect()
    async with (
        a.pubsub("orders").subscribe(name="billing", prefetch=1) as one,
        b.pubsub("orders").subscribe(name="billing", prefetch=1) as two,
        bus.pubsub("orders").subscribe() as watcher,
    ):
        for i in range(10):
            await events.publish(i)
        took_one, took_two = await asyncio.gather(
            receive_until_quiet(one, quiet=QUIET * 2, ack=True),
            receive_until_quiet(two, quiet=QUIET * 2, ack=True),
        )
        got_one = [msg.body for msg in took_one]
        got_two = [msg.body for msg in took_two]
        # the group shares: each message to exactly one member
        assert sorted(got_one + got_two) == list(range(10))
        assert got_one and got_two
        # while a separate subscriber still gets every message
        assert await drain(watcher, 10, ack=False) == list(range(10))


async def test_pubsub_worker_receives_published_messages(connect):
    bus = await connect()
    logs = bus.pubsub("worked")
    seen: list[str] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def handle(msg):
        seen.append(msg.body)
        if len(seen) == 3:
            loop.call_soon_threadsafe(done.set)

    await logs.worker(handle)
    for i in range(3):
        await logs.publish(f"m{i}")
    await asyncio.wait_for(done.wait(), 10)
    assert seen == ["m0", "m1", "m2"]


@pytest.mark.requires("ttl")
async def test_a_message_that_expires_before_its_subscriber_takes_it_is_not_delivered(connect):
    bus = await connect()
    news = bus.pubsub("perishable")
    async with news.subscribe(prefetch=1, auto_ack=False) as sub:
        await news.publish("first")
        await news.publish("stale", ttl=0.1)
        await news.publish("fresh")
        first = await sub.receive(timeout=5)  # the one prefetch slot is taken
        await asyncio.sleep(0.4)  # while "stale" waits, it expires
        await first.ack()
        assert await drain(sub, 1) == ["fresh"]
        await assert_nothing_arrives(sub)
