"""Routed: direct and topic exchanges behave exactly as RabbitMQ's."""

from __future__ import annotations

import asyncio

import pytest

from polybus import Unroutable
from polybus.core.topic import topic_matches
from polybus.testing.conformance._receive import QUIET, receive_until_quiet

# (binding pattern, routing key, matches) — RabbitMQ's answers, zero-word # cases included
TOPIC_TABLE = [
    ("a.#", "a", True),
    ("a.#", "a.b", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b.a", False),
    ("*.a", "a", False),
    ("*.a", "b.a", True),
    ("#.a.#", "a", True),
    ("#.a.#", "x.a.y", True),
    ("#.a", "a", True),
    ("#", "", True),
    ("#", "any.thing.at.all", True),
    ("*", "", False),
    ("*", "one", True),
    ("*", "one.two", False),
    ("a.*", "a", False),
    ("a.*", "a.b", True),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c", False),
    ("a.#.c", "a.c", True),
    ("a.#.c", "a.b.b.c", True),
    ("kern.*", "kern.critical", True),
    ("*.critical", "kern.critical", True),
    ("*.critical", "kern.disk.critical", False),
    ("a.b", "a.b", True),
    ("a.b", "a.b.c", False),
    ("", "", True),
    ("", "a", False),
]


async def keys_received(sub, timeout=QUIET):
    return [msg.key for msg in await receive_until_quiet(sub, quiet=timeout)]


async def test_direct_routing_delivers_exact_key_matches_only(connect):
    bus = await connect()
    logs = bus.router("direct_logs", kind="direct")
    async with (
        logs.subscribe(["error"]) as errors,
        logs.subscribe(["info", "warning", "error"]) as everything,
    ):
        for severity in ["info", "warning", "error", "debug"]:
            await logs.publish(f"{severity} message", key=severity)
        assert await keys_received(errors) == ["error"]
        assert await keys_received(everything) == ["info", "warning", "error"]


async def test_many_queues_bound_with_one_key_each_get_a_copy(connect):
    bus = await connect()
    logs = bus.router("copies", kind="direct")
    async with logs.subscribe(["black"]) as one, logs.subscribe(["black"]) as two:
        await logs.publish("x", key="black")
        assert await keys_received(one) == ["black"]
        assert await keys_received(two) == ["black"]


async def test_topic_routing_follows_rabbitmq_rules(connect):
    bus = await connect()
    topics = bus.router("topic_table", kind="topic")
    patterns = sorted({pattern for pattern, _, _ in TOPIC_TABLE})
    keys = sorted({key for _, key, _ in TOPIC_TABLE})
    subs = {p: topics.subscribe([p]) for p in patterns}
    for sub in subs.values():
        await sub.start()
    try:
        for key in keys:
            await topics.publish(key, key=key)
        for pattern, sub in subs.items():
            got = await keys_received(sub, timeout=0.3)
            expected = [k for k in keys if topic_matches(pattern, k)]
            assert got == expected, f"pattern {pattern!r}"
    finally:
        for sub in subs.values():
            await sub.close()
    for pattern, key, matches in TOPIC_TABLE:
        assert topic_matches(pattern, key) is matches, (pattern, key)


async def test_a_queue_with_several_patterns_gets_a_matching_message_once(connect):
    bus = await connect()
    topics = bus.router("overlap", kind="topic")
    async with topics.subscribe(["kern.*", "*.critical", "#"]) as sub:
        await topics.publish("disk full", key="kern.critical")
        assert await keys_received(sub) == ["kern.critical"]


async def test_message_matching_no_binding_is_dropped(connect):
    bus = await connect()
    topics = bus.router("nowhere", kind="topic")
    async with topics.subscribe(["only.this"]) as sub:
        await topics.publish("lost", key="something.else")
        assert await keys_received(sub) == []


@pytest.mark.requires("mandatory")
async def test_mandatory_message_matching_no_binding_raises(connect):
    bus = await connect()
    topics = bus.router("strict", kind="topic")
    async with topics.subscribe(["a.*"]) as sub:
        with pytest.raises(Unroutable):
            await topics.publish("lost", key="b.c", mandatory=True)
        await topics.publish("kept", key="a.b", mandatory=True)
        assert await keys_received(sub) == ["a.b"]


async def test_named_routed_subscription_keeps_messages_while_away(connect):
    bus = await connect()
    alerts = bus.router("alerts", kind="topic")
    async with alerts.subscribe(["*.critical"], name="pager") as sub:
        pass
    await alerts.publish("fire", key="dc1.critical")
    await alerts.publish("meh", key="dc1.info")
    async with alerts.subscribe(["*.critical"], name="pager") as sub:
        msg = await sub.receive(timeout=5)
        await msg.ack()
        assert (msg.key, msg.body) == ("dc1.critical", "fire")


async def test_router_worker_handles_routed_messages(connect):
    bus = await connect()
    topics = bus.router("worked_topics", kind="topic")
    seen: list[str] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def handle(msg):
        seen.append(msg.key)
        if len(seen) == 2:
            loop.call_soon_threadsafe(done.set)

    await topics.worker(handle, keys=["a.#"])
    for key in ["a", "b", "a.b"]:
        await topics.publish("x", key=key)
    await asyncio.wait_for(done.wait(), 10)
    assert seen == ["a", "a.b"]
