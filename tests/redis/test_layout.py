"""Every key lives under ``polybus:<namespace>:``, and what a connection owned goes with it."""

from __future__ import annotations

import redis.asyncio

import polybus.aio
from polybus.testing.redis_harness import SHARED_URL, delete_keys


async def keys(namespace):
    client = redis.asyncio.Redis.from_url(SHARED_URL)
    try:
        found = [key.decode() async for key in client.scan_iter(match="*" + namespace + "*")]
    finally:
        await client.aclose()
    return sorted(found)


async def test_keys_of_queues_exchanges_and_connections(redis_url, namespace):
    p = f"polybus:{namespace}:"
    ns = namespace
    async with polybus.aio.connect(redis_url) as bus:
        conn = bus._transport.conn_id
        q = bus.work_queue("jobs")
        await q.send("x")
        logs = bus.pubsub("logs")
        async with logs.subscribe() as sub:
            transient = sub.queue
            # Given a queue with its dead-letter queue, an exchange and a live subscription
            assert await keys(namespace) == sorted(
                [
                    f"{p}q:{ns}.jobs",
                    f"{p}s:{ns}.jobs:0",
                    f"{p}q:{ns}.jobs.dead",
                    f"{p}s:{ns}.jobs.dead:0",
                    f"{p}x:{ns}.logs",
                    f"{p}b:{ns}.logs",
                    f"{p}q:{transient}",
                    f"{p}s:{transient}:0",
                    f"{p}qb:{transient}",
                    f"{p}qc:{transient}",
                    f"{p}conns",
                    f"{p}cq:{conn}",
                    f"{p}own:{conn}",
                ]
            )
    # When the bus closes, the connection's keys and its transient queue are gone
    assert await keys(namespace) == sorted(
        [f"{p}q:{ns}.jobs", f"{p}s:{ns}.jobs:0", f"{p}q:{ns}.jobs.dead", f"{p}s:{ns}.jobs.dead:0",
         f"{p}x:{ns}.logs"]
    )  # fmt: skip
    # And the harness's cleanup deletes the rest by prefix
    assert delete_keys(SHARED_URL, f"{p}*") == 5
    assert await keys(namespace) == []


async def test_deleting_a_queue_removes_its_keys_and_bindings(redis_url, namespace):
    async with polybus.aio.connect(redis_url) as bus:
        router = bus.router("r", kind="direct")
        async with router.subscribe(["k"], name="named") as sub:
            queue = sub.queue
        await bus._transport.delete_queue(queue)
        await bus._transport.delete_exchange(router.name)
    assert await keys(namespace) == []
