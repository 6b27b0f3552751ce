"""Peek, stats and queue listing as Redis answers them: peek shows the entries past each
level's last delivered id, highest level first — what ``XREADGROUP`` and ``FETCH`` take next,
so a returned message waits at its level's tail — and changes nothing; consumers are counted by
their registration and their connection's heartbeat, not by the consumer group's names."""

from __future__ import annotations

import asyncio

import polybus.aio


def seen(messages):
    return [(m.body, m.redelivered, m.delivery_count) for m in messages]


async def test_a_requeued_message_is_peeked_at_the_tail_where_it_is_delivered_next(any_url):
    async with polybus.aio.connect(any_url) as bus:
        # Given a message delivered once and requeued after two more were sent
        q = bus.work_queue("requeued")
        await q.send("first")
        async with q.consume(prefetch=1) as sub:
            first = await sub.receive(timeout=5)
        await q.send_many(["second", "third"])
        await first.nack(requeue=True)
        # When the queue is peeked (twice: the first changes nothing)
        await q.peek()
        peeked = await q.peek()
        # Then it shows the requeued copy last, counted once, and delivery agrees
        expected = [("second", False, 0), ("third", False, 0), ("first", True, 1)]
        assert seen(peeked) == expected
        async with q.consume(prefetch=3) as sub:
            delivered = [await sub.receive(timeout=5) for _ in expected]
            for msg in delivered:
                await msg.ack()
        assert seen(delivered) == [(body, was, count + 1) for body, was, count in expected]


async def test_peek_takes_the_highest_priority_first_and_skips_what_is_held(any_url):
    async with polybus.aio.connect(any_url) as bus:
        q = bus.work_queue("ranked", max_priority=5)
        for body, priority in (("low", 1), ("none", None), ("high", 5), ("mid", 3)):
            await q.send(body, priority=priority)
        assert seen(await q.peek()) == [(b, False, 0) for b in ("high", "mid", "low", "none")]
        async with q.consume() as first, q.consume() as second:
            held = [await first.receive(timeout=5), await second.receive(timeout=5)]
            assert [m.body for m in held] == ["high", "mid"]
            # held on two levels: unacked over all of them, and not peeked
            assert [m.body for m in await q.peek()] == ["low", "none"]
            stats = await q.stats()
            assert (stats.ready, stats.unacked, stats.consumers) == (2, 2, 2)
            for msg in held:
                await msg.ack()
            rest = [await first.receive(timeout=5), await second.receive(timeout=5)]
            assert seen(rest) == [("low", False, 1), ("none", False, 1)]
            for msg in rest:
                await msg.ack()


async def test_an_expired_message_is_not_peeked_and_peek_leaves_it_alone(any_url):
    async with polybus.aio.connect(any_url) as bus:
        q = bus.work_queue("short")
        await q.send("stale", ttl=0.05)
        await q.send("fresh")
        await asyncio.sleep(0.15)
        assert [m.body for m in await q.peek()] == ["fresh"]
        graveyard = bus.work_queue("short.dead")
        assert await graveyard.size() == 0  # peek dead-lettered nothing
        assert await q.size() == 1  # counting does, as a consumer would
        assert await graveyard.size() == 1


async def test_consumers_are_counted_while_registered_and_alive(any_url):
    async with polybus.aio.connect(any_url) as bus, polybus.aio.connect(any_url) as other:
        q = bus.work_queue("watched")
        await q.send("a")
        async with q.consume() as mine, other.work_queue("watched").consume():
            held = await mine.receive(timeout=5)
            stats = await q.stats()
            assert (stats.ready, stats.unacked, stats.consumers) == (0, 1, 2)
        # the cancelled consumer still has its entry pending under its name in the group
        stats = await q.stats()
        assert (stats.ready, stats.unacked, stats.consumers) == (0, 1, 0)
        await held.ack()


async def test_a_dead_connection_s_consumer_is_not_counted_even_before_it_is_reaped(any_url):
    async with polybus.aio.connect(any_url) as bus, polybus.aio.connect(any_url) as gone:
        q = bus.work_queue("orphaned")
        async with gone.work_queue("orphaned").consume():
            assert (await q.stats()).consumers == 1
            await gone._transport.abort()
            for _ in range(100):  # its deadline passes within one heartbeat timeout (2 s)
                if (await q.stats()).consumers == 0:
                    break
                await asyncio.sleep(0.05)
            assert (await q.stats()).consumers == 0


async def test_queue_names_are_the_declared_queues_and_nothing_internal(any_url):
    async with polybus.aio.connect(any_url) as bus:
        # Given queues, an exchange with a binding and a delayed message
        q = bus.work_queue("jobs")
        await q.send("later", delay=30)
        async with bus.pubsub("events").subscribe() as sub:
            transient = sub.queue.split(".", 1)[1]  # without the namespace
            names = await bus.queue_names()
        # Then only the queues are listed, the subscription's own one too
        assert names == sorted(["jobs", "jobs.dead", transient])
        assert await bus.queue_names() == ["jobs", "jobs.dead"]
