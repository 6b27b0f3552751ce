"""A test-owned server (AOF, appendfsync always) killed with SIGKILL mid-stream: nothing that was
confirmed is lost, consumers resume, and while the server is gone publishing raises."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis import exceptions as redis_errors

import polybus.aio
from polybus import ConnectionFailed, PolybusError, PublishFailed
from polybus.testing.redis_harness import OwnedRedis, add_namespace


def url_of(server, **options):
    query = "&".join(f"{k}={v}" for k, v in {"heartbeat": 2, **options}.items())
    return add_namespace(f"{server.url}?{query}", "rs")


async def test_confirmed_messages_survive_a_kill_mid_stream_and_the_consumer_resumes(owned_redis):
    url = url_of(owned_redis)
    confirmed: list[int] = []
    failed: list[int] = []
    received: list[int] = []
    midway = asyncio.Event()
    async with polybus.aio.connect(url) as bus:
        q = bus.work_queue("stream")
        await q.declare()
        consumer = await q.worker(lambda msg: received.append(msg.body), prefetch=20)

        async def publish() -> None:
            for n in range(600):
                try:
                    await q.send(n)
                    confirmed.append(n)
                    if len(confirmed) == 200:
                        midway.set()
                except PolybusError:
                    failed.append(n)
                    await asyncio.sleep(0.05)

        async def kill_midway() -> None:
            await midway.wait()
            await asyncio.get_running_loop().run_in_executor(None, owned_redis.restart)

        # When the server is killed and restarted while messages stream in and are consumed
        await asyncio.gather(publish(), kill_midway())
        deadline = time.monotonic() + 30
        while not set(confirmed) <= set(received):
            assert time.monotonic() < deadline, sorted(set(confirmed) - set(received))[:20]
            await asyncio.sleep(0.1)
        await consumer.close()
    # Then every confirmed message reached the consumer after the restart as well as before it
    assert max(confirmed) > max(n for n in confirmed if n < 200)
    assert set(received) <= set(confirmed) | set(failed)
    assert len(confirmed) + len(failed) == 600


async def test_durable_messages_are_in_the_append_only_file_when_killed(owned_redis):
    url = url_of(owned_redis)
    async with polybus.aio.connect(url) as bus:
        await bus.work_queue("kept").send_many(list(range(100)))
    owned_redis.restart()
    async with polybus.aio.connect(url) as bus:
        assert await bus.work_queue("kept").size() == 100


async def test_under_everysec_a_killed_server_process_loses_nothing_confirmed():
    # the AOF is written to the OS before Redis replies; only the fsync is once a second
    server = OwnedRedis(appendfsync="everysec")
    server.start()
    try:
        url = url_of(server)
        async with polybus.aio.connect(url) as bus:
            await bus.work_queue("kept").send_many(list(range(100)))
        server.restart()
        async with polybus.aio.connect(url) as bus:
            assert await bus.work_queue("kept").size() == 100
    finally:
        server.remove()


async def test_publish_raises_while_the_server_is_gone(owned_redis):
    async with polybus.aio.connect(url_of(owned_redis)) as bus:
        q = bus.work_queue("gone")
        await q.send("before")
        owned_redis.kill()
        started = time.monotonic()
        with pytest.raises((PublishFailed, ConnectionFailed)) as caught:
            await q.send("lost?")
        assert time.monotonic() - started < 5
        # the redis-py error is the cause, never what the user catches
        assert isinstance(caught.value.__cause__, (redis_errors.RedisError, OSError))
        owned_redis.start()


async def test_connecting_to_a_dead_server_fails_fast(owned_redis):
    url = url_of(owned_redis, connect_timeout=1)
    owned_redis.kill()
    started = time.monotonic()
    with pytest.raises(ConnectionFailed):
        await polybus.aio.connect(url)
    assert time.monotonic() - started < 3
