"""A stream entry polybus did not write (or one damaged) never stops a consumer: it is
dead-lettered, with the reason, and consumption goes on."""

from __future__ import annotations

import redis.asyncio

import polybus.aio
from polybus.core.headers import DEAD_MESSAGE, DEAD_REASON


async def test_a_foreign_stream_entry_is_dead_lettered_and_consumption_goes_on(
    redis_url, namespace
):
    async with polybus.aio.connect(redis_url) as bus:
        # Given a queue holding an entry another program wrote, then a good message
        q = bus.work_queue("jobs")
        await q.declare()
        client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/0")
        try:
            await client.xadd(f"polybus:{namespace}:s:{namespace}.jobs:0", {"who": "else"})
        finally:
            await client.aclose()
        await q.send("good")
        # When it is consumed
        async with q.consume(prefetch=5) as sub:
            msg = await sub.receive(timeout=15)
            await msg.ack()
        # Then the good message arrives, and the foreign entry waits in the dead-letter queue
        assert msg.body == "good"
        async with bus.work_queue("jobs.dead").consume() as dead:
            dead_msg = await dead.receive(timeout=15)
            await dead_msg.ack()
        assert dead_msg.headers[DEAD_REASON] == "undecodable"
        assert "cannot be read" in dead_msg.headers[DEAD_MESSAGE]
