"""Operating NATS queues: peek and counts read JetStream's own state, a returned message is
counted as ready by every connection, and listing shows the queues polybus declared."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import polybus.aio
from polybus import CapabilityMissing, NotFound
from polybus.core.headers import DEAD_REASON
from polybus.core.transport import Delivery, Envelope, QueueOptions
from polybus.transports.nats._names import CONSUMER


async def held(transport: Any, queue: str, count: int) -> list[Delivery]:
    """``count`` deliveries of the queue, held by a consumer cancelled at once (so that none
    returned is taken again)."""
    arrived: asyncio.Queue[Delivery] = asyncio.Queue()
    tag = await transport.consume(queue, arrived.put_nowait, prefetch=count)
    deliveries = [await asyncio.wait_for(arrived.get(), 5) for _ in range(count)]
    await transport.cancel(tag)
    return deliveries


async def test_a_returned_message_is_ready_for_every_connection_at_once(nats_url):
    async with polybus.aio.connect(nats_url) as bus, polybus.aio.connect(nats_url) as other:
        q = bus.work_queue("returned")
        await q.send_many(["kept", "returned"])
        kept, returned = await held(bus._transport, q.name, 2)
        # When one is returned (a requeue)
        await bus._transport.nack(returned, requeue=True)
        # Then another connection counts it as ready, and the other as unacked
        seen = other.work_queue("returned")
        stats = await seen.stats()
        assert (stats.ready, stats.unacked, stats.consumers) == (1, 1, None)
        [peeked] = await seen.peek()
        assert (peeked.body, peeked.redelivered, peeked.delivery_count) == ("returned", True, 1)
        # And it is delivered again, counted, once
        async with seen.consume(prefetch=2) as sub:
            again = await sub.receive(timeout=5)
            await again.ack()
        assert (again.body, again.redelivered, again.delivery_count) == ("returned", True, 2)
        await bus._transport.ack(kept)
        assert (await q.stats()).ready == (await q.stats()).unacked == 0


async def test_a_closed_connection_returns_what_it_held_as_ready(nats_url):
    async with polybus.aio.connect(nats_url) as other:
        async with polybus.aio.connect(nats_url) as bus:
            q = bus.work_queue("given-back")
            await q.send_many(["a", "b", "c"])
            await held(bus._transport, q.name, 2)
        stats = await other.work_queue("given-back").stats()
        assert (stats.ready, stats.unacked) == (3, 0)  # at once, not after an ack wait
        assert [m.body for m in await other.work_queue("given-back").peek()] == ["c", "a", "b"]


async def test_peek_follows_the_delivery_order_of_priorities(nats_url):
    async with polybus.aio.connect(nats_url) as bus:
        q = bus.work_queue("ranked", max_priority=3)
        for body, priority in [("p0", 0), ("p2", 2), ("p9", 9), ("p1", 1), ("p3", 3), ("p0b", 0)]:
            await q.send(body, priority=priority)
        peeked = [m.body for m in await q.peek(10)]
        assert peeked == ["p9", "p3", "p2", "p1", "p0", "p0b"]
        assert [m.body for m in await q.peek(3)] == peeked[:3]
        async with q.consume(prefetch=1) as sub:
            delivered = []
            for _ in peeked:
                msg = await sub.receive(timeout=5)
                delivered.append(msg.body)
                await msg.ack()
        assert delivered == peeked


async def test_peek_counts_no_delivery_and_moves_nothing(nats_url):
    async with polybus.aio.connect(nats_url) as bus:
        q = bus.work_queue("looked-at")
        await q.send("once", headers={"trace": "t"}, message_id="m-1")
        js = bus._transport._js
        stream = bus._transport._names.stream(q.name)
        before = await js.consumer_info(stream, CONSUMER)
        for _ in range(3):
            [peeked] = await q.peek()
        after = await js.consumer_info(stream, CONSUMER)
        assert after.delivered == before.delivered and after.num_redelivered == 0
        assert (after.num_pending, after.num_ack_pending) == (1, 0)
        assert (peeked.body, peeked.message_id, peeked.headers) == ("once", "m-1", {"trace": "t"})
        assert (peeked.key, peeked.redelivered, peeked.delivery_count) == (q.name, False, 0)
        async with q.consume() as sub:
            msg = await sub.receive(timeout=5)
            await msg.ack()
        assert (msg.redelivered, msg.delivery_count) == (False, 1)


async def test_peek_leaves_out_expired_messages_and_moves_none(nats_url):
    async with polybus.aio.connect(nats_url) as bus:
        q = bus.work_queue("fading")
        await q.send("gone", ttl=0.2)
        await q.send("live")
        await asyncio.sleep(0.4)
        assert [m.body for m in await q.peek()] == ["live"]
        assert await bus.work_queue("fading.dead").size() == 0  # left for the queue to expire


async def test_a_returned_message_expires_when_its_first_copy_would(nats_url):
    async with polybus.aio.connect(nats_url) as bus:
        q = bus.work_queue("short-lived", message_ttl=1.0)
        await q.send("x")
        [delivery] = await held(bus._transport, q.name, 1)
        await asyncio.sleep(0.6)
        await bus._transport.nack(delivery, requeue=True)
        assert [m.body for m in await q.peek()] == ["x"]
        await asyncio.sleep(0.6)  # past the queue's ttl since first stored, not since returned
        assert await q.peek() == []
        assert await q.size() == 0
        async with bus.work_queue("short-lived.dead").consume() as dead:
            msg = await dead.receive(timeout=5)
            await msg.ack()
        assert (msg.body, msg.headers[DEAD_REASON]) == ("x", "expired")


async def test_queue_names_are_the_declared_queues_not_the_delay_structures(nats_url):
    async with polybus.aio.connect(nats_url) as bus:
        q = bus.work_queue("timed")
        await q.send("later", delay=0.2)
        await bus.work_queue("plain", dead_letter=None).declare()
        assert await bus.queue_names() == ["plain", "timed", "timed.dead"]
        async with q.consume() as sub:
            msg = await sub.receive(timeout=5)
            await msg.ack()
        assert await bus.queue_names() == ["plain", "timed", "timed.dead"]


async def test_an_exclusive_queue_is_peeked_by_its_owner_and_listed_while_it_lives(
    nats_url, namespace
):
    async with polybus.aio.connect(nats_url) as bus:
        owner = await polybus.aio.connect(nats_url)
        name = f"{namespace}.mine"
        await owner._transport.declare_queue(name, QueueOptions(durable=False, exclusive=True))
        await owner._transport.publish("", name, Envelope(b"private"))
        [peeked] = await owner._transport.peek(name, 5)
        assert (peeked.envelope.body, peeked.redelivered, peeked.tag) == (b"private", False, None)
        stats = await owner._transport.queue_stats(name)
        assert (stats.ready, stats.unacked, stats.consumers) == (1, 0, 0)
        assert await bus.queue_names() == ["mine"]
        with pytest.raises(CapabilityMissing, match="exclusive"):
            await bus._transport.peek(name, 5)
        # When its owner crashes, it is gone for everyone
        await owner._transport.abort()
        assert await bus.queue_names() == []
        with pytest.raises(NotFound):
            await bus._transport.peek(name, 5)


async def test_peek_of_a_missing_queue_is_not_found(nats_url):
    async with polybus.aio.connect(nats_url) as bus:
        with pytest.raises(NotFound):
            await bus._transport.peek(f"{bus._transport.url.settings['namespace']}.none", 1)


async def test_a_message_returned_twice_at_once_is_stored_again_once(nats_url):
    async with polybus.aio.connect(nats_url) as bus:
        q = bus.work_queue("returned-twice")
        await q.send("one")
        [delivery] = await held(bus._transport, q.name, 1)
        # two returns at once, as a nack racing a closing consumer's give-back
        await asyncio.gather(
            bus._transport.nack(delivery, requeue=True), bus._transport.nack(delivery, requeue=True)
        )
        assert (await q.stats()).ready == 1
        assert [m.body for m in await q.peek()] == ["one"]
