"""Existing topologies: what another program declared, its own way, is used as it is with
``declare=False``; a declaration that differs names the option, both values and the fix."""

from __future__ import annotations

import asyncio

import pytest

from polybus import DeclarationConflict, NotFound
from polybus.testing.conformance._receive import drain


async def test_a_queue_declared_another_way_is_used_as_it_is(connect):
    # Given a non-durable queue without a dead-letter queue, declared by another program
    other = await connect()
    await other.work_queue("hello", durable=False, dead_letter=None).declare()
    # When this program uses it without declaring anything
    bus = await connect()
    hello = bus.work_queue("hello", declare=False)
    await hello.send("Hello World!")
    # Then it works, on the queue as it was
    async with hello.consume() as sub:
        assert await drain(sub, 1) == ["Hello World!"]
    async with other.work_queue("hello", durable=False, dead_letter=None).consume() as sub:
        await hello.send("seen by the other program too")
        assert await drain(sub, 1) == ["seen by the other program too"]


async def test_using_a_missing_queue_as_it_is_raises_not_found_and_creates_nothing(connect, target):
    bus = await connect()
    with pytest.raises(NotFound, match="declare=False"):
        await bus.work_queue("absent", declare=False).send("x")
    with pytest.raises(NotFound, match="declare=False"):
        await bus.pubsub("absent-exchange", declare=False).publish("x")
    with pytest.raises(NotFound):
        await bus.rpc("absent-rpc", declare=False).call(1, timeout=1)
    assert not await target.queue_exists(bus, f"{target.namespace}.absent")


async def test_a_conflicting_declaration_names_the_option_both_values_and_the_fix(connect):
    other = await connect()
    await other.work_queue("legacy", durable=False, dead_letter=None).declare()
    bus = await connect()
    with pytest.raises(DeclarationConflict) as caught:
        await bus.work_queue("legacy", durable=True, dead_letter=None).declare()
    message = str(caught.value)
    assert "durable=False" in message and "durable=True" in message
    assert "declare=False" in message
    # and the bus stays usable
    await bus.work_queue("legacy", declare=False).send("fine")


async def test_an_exchange_declared_another_way_is_used_as_it_is(connect):
    # Given a non-durable topic exchange another program declared
    other = await connect()
    await other.router("topic_logs", kind="topic", durable=False).declare()
    # When this program subscribes and publishes without declaring it
    bus = await connect()
    logs = bus.router("topic_logs", kind="topic", declare=False)
    async with logs.subscribe(["kern.*"]) as sub:
        await logs.publish("disk full", key="kern.critical")
        assert await drain(sub, 1) == ["disk full"]
    # And declaring it durable is a conflict that says so
    with pytest.raises(DeclarationConflict, match="durable=False"):
        await bus.router("topic_logs", kind="topic").declare()
    # While declaring it as it is works
    await bus.router("topic_logs", kind="topic", durable=False).declare()


async def test_the_url_can_ask_every_pattern_to_use_what_exists(connect, target):
    # Given a queue, a fanout exchange and an RPC queue another program declared
    other = await connect()
    await other.work_queue("jobs", durable=False, dead_letter=None).declare()
    await other.pubsub("logs", durable=False).declare()
    await other.rpc("rpc").serve(lambda n: n + 1)
    # When this program's URL says declare=false
    url = target.harness.url(target.namespace)
    bus = await connect(f"{url}&declare=false" if "?" in url else f"{url}?declare=false")
    # Then every pattern uses them as they are
    jobs = bus.work_queue("jobs")
    await jobs.send("job")
    async with jobs.consume() as sub:
        assert await drain(sub, 1) == ["job"]
    logs = bus.pubsub("logs")
    async with logs.subscribe() as sub:
        await logs.publish("line")
        assert await drain(sub, 1) == ["line"]
    assert await asyncio.wait_for(bus.rpc("rpc").call(1, timeout=10), 15) == 2
    with pytest.raises(NotFound):
        await bus.work_queue("never-declared").send("x")
