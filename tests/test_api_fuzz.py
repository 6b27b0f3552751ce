"""Random sequences of public-API calls with random, often invalid, arguments: on memory and on
Redis every call returns or raises a ``PolybusError`` within a bound, and both answer alike —
so code tested on ``memory://`` meets no surprise on a broker."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import polybus.aio
from polybus import PolybusError
from polybus.testing.plugin import skip_unless_available
from polybus.testing.redis_harness import FakeRedisHarness, RedisHarness

BOUND = 10.0


def mostly(valid: list[Any], invalid: list[Any]) -> st.SearchStrategy[Any]:
    """Valid values three times as often as invalid ones: calls get past the first check."""
    good = st.sampled_from(valid)
    return st.one_of(good, good, good, st.sampled_from(invalid))


names = mostly(["jobs", "jobs.dead", "other"], ["", "has space", "amq.x", "n" * 201, 7])
keys = mostly(["a", "a.b", ""], ["a.*", "k" * 256, None])
anything = st.sampled_from([None, True, 0, -1, 1, 5, 300, 10**6, 0.5, -2.5, "x", "high", b"b", [1]])
ttls = mostly([None, 60, 120.5], [0, -1, float("nan"), "abc", True])
priorities = mostly([None, 0, 3, 9, 255], [256, -1, "high", True, 2.0])
bodies = st.sampled_from(["text", b"bytes", {"n": 1}, [1, 2], None, 3, {1, 2}, float("nan")])
headers = st.sampled_from(
    [None, {}, {"a": 1}, {"a": 1.5}, "s", {"x-delivery-count": 1}, {"deep": [{"b": None}]}]
)
send_options = st.fixed_dictionaries(
    {},
    optional={
        "ttl": ttls,
        "priority": priorities,
        "headers": headers,
        "message_id": mostly(["m-1", ""], [123, "m" * 256]),
        "persistent": mostly([True, False], ["yes"]),
        "delay": anything,
        "tll": anything,
    },
)
queue_options = st.fixed_dictionaries(
    {},
    optional={
        "durable": mostly([True, False], ["no"]),
        "dead_letter": mostly([True, None, "elsewhere"], ["bad name"]),
        "max_priority": mostly([None, 1, 9, 255], [256, 0, "9"]),
        "message_ttl": ttls,
    },
)
operations = st.one_of(
    st.tuples(st.just("send"), names, queue_options, bodies, send_options),
    st.tuples(st.just("send_many"), names, queue_options, st.lists(bodies, max_size=3), headers),
    st.tuples(st.just("size"), names, queue_options),
    st.tuples(st.just("purge"), names, queue_options),
    st.tuples(
        st.just("receive"),
        names,
        queue_options,
        mostly([1, 5], [0, -1, 10**6, "x"]),
        mostly([0.5], [-1, "x"]),
    ),
    st.tuples(st.just("publish"), names, st.sampled_from(["direct", "topic", "x"]), keys, bodies),
    st.tuples(st.just("subscribe"), names, st.sampled_from(["topic", "direct"]), st.lists(keys)),
    st.tuples(st.just("call"), names, bodies, st.sampled_from([0.05, 0, -1, "x", None, 1e9])),
)


async def perform(bus: Any, operation: tuple[Any, ...]) -> Any:
    """Run one operation; what it returned (made comparable) or the error's class name."""
    kind, name, *args = operation
    try:
        if kind in ("send", "send_many", "size", "purge", "receive"):
            q = bus.work_queue(name, **args[0])
            if kind == "send":
                return await q.send(args[1], **args[2])
            if kind == "send_many":
                return await q.send_many(args[1], headers=args[2])
            if kind == "size":
                return await q.size()
            if kind == "purge":
                return await q.purge()
            async with q.consume(prefetch=args[1]) as sub:
                msg = await sub.receive(timeout=args[2])
                await msg.ack()
                return ("message", msg.body, msg.priority)
        if kind == "publish":
            router = bus.router(name, kind=args[0])
            return await router.publish(args[2], key=args[1])
        if kind == "subscribe":
            async with bus.router(name, kind=args[0]).subscribe(args[1]):
                return "subscribed"
        return await bus.rpc(name).call(args[0], timeout=args[1])
    except PolybusError as exc:
        return type(exc).__name__


async def run(url: str, operations: list[tuple[Any, ...]]) -> list[Any]:
    outcomes = []
    async with polybus.aio.connect(url) as bus:
        for operation in operations:
            outcomes.append(await asyncio.wait_for(perform(bus, operation), BOUND))
    return outcomes


@pytest.fixture(params=["fakeredis", "redis"], scope="module")
def redis_url(request: pytest.FixtureRequest) -> Any:
    harness = RedisHarness() if request.param == "redis" else FakeRedisHarness()
    skip_unless_available(request.param, harness)

    def url(namespace: str) -> str:
        return harness.url(namespace)

    yield url, harness
    harness.shutdown()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(operations, min_size=1, max_size=12))
def test_memory_and_redis_answer_every_call_alike(redis_url, operations):
    make_url, harness = redis_url
    namespace = f"f{os.urandom(5).hex()}"
    try:
        on_memory = asyncio.run(run(f"memory://{namespace}", operations))
        on_redis = asyncio.run(run(make_url(namespace), operations))
    finally:
        harness.cleanup(namespace)
    assert on_redis == on_memory
