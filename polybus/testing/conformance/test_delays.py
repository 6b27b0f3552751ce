"""Delayed delivery: a message sent with ``delay=`` is delivered no earlier than asked, and not
much later (``LATE``), routed when it is due, without holding back the messages behind it, and
as durable as any message."""

from __future__ import annotations

import time

import pytest

from polybus import InvalidArgument, ReceiveTimeout

from ._receive import drain

LATE = 1.0
"""Seconds a delayed message may arrive after its time on a lightly loaded machine (RabbitMQ
rounds a delay up to its next level: see docs/operating.md)."""


async def received_at(sub, timeout=10.0):
    msg = await sub.receive(timeout=timeout)
    await msg.ack()
    return msg.body, time.monotonic()


@pytest.mark.requires("delay")
async def test_a_delayed_message_is_delivered_no_earlier_than_its_delay(connect):
    # Given a queue and a consumer on it
    bus = await connect()
    q = bus.work_queue("later")
    async with q.consume(prefetch=10) as sub:
        # When one message is sent delayed and another right after it, undelayed
        sent = time.monotonic()
        await q.send("in half a second", delay=0.5)
        await q.send("now")
        # Then the undelayed one comes first, at once, and the delayed one on time
        body, at = await received_at(sub)
        assert (body, at - sent < 0.45) == ("now", True)
        body, at = await received_at(sub)
        assert body == "in half a second"
        assert 0.5 <= at - sent <= 0.5 + LATE, at - sent


@pytest.mark.requires("delay")
async def test_delayed_messages_are_delivered_in_the_order_they_fall_due(connect):
    bus = await connect()
    q = bus.work_queue("due-order")
    async with q.consume(prefetch=10) as sub:
        for body, delay in (("third", 0.9), ("first", 0.1), ("second", 0.5)):
            await q.send(body, delay=delay)
        assert await q.size() == 0  # not visible before its time
        assert await drain(sub, 3) == ["first", "second", "third"]


@pytest.mark.requires("delay")
async def test_a_delayed_publish_is_routed_by_its_key_when_it_is_due(connect):
    # Given a topic router with a subscription bound to one pattern
    bus = await connect()
    router = bus.router("delayed-topics", kind="topic")
    async with router.subscribe(["kern.*"]) as sub:
        # When a matching and a non-matching message are published delayed
        sent = time.monotonic()
        await router.publish("disk full", key="kern.critical", delay=0.5)
        await router.publish("ignored", key="app.info", delay=0.5)
        # Then only the matching one arrives, with its key, on time
        msg = await sub.receive(timeout=10)
        await msg.ack()
        assert (msg.body, msg.key) == ("disk full", "kern.critical")
        assert time.monotonic() - sent >= 0.5
        with pytest.raises(ReceiveTimeout):
            await sub.receive(timeout=0.5)  # the other fell due with it


@pytest.mark.requires("delay")
async def test_a_delayed_publish_reaches_who_subscribed_before_it_fell_due(connect):
    # Given a message published delayed to a fanout nobody listens to yet
    bus = await connect()
    logs = bus.pubsub("delayed-logs")
    await logs.publish("later", delay=1.0)
    # When a subscriber comes before it falls due
    async with logs.subscribe() as sub:
        # Then it gets it: a delayed message is routed when it falls due
        msg = await sub.receive(timeout=10)
        assert msg.body == "later"


@pytest.mark.requires("delay")
async def test_a_delayed_message_keeps_its_properties(connect):
    bus = await connect()
    q = bus.work_queue("delayed-props")
    await q.send({"n": 1}, delay=0.2, headers={"trace": "t-1"}, message_id="m-1", priority=3)
    async with q.consume() as sub:
        msg = await sub.receive(timeout=10)
        await msg.ack()
    assert msg.body == {"n": 1} and msg.message_id == "m-1" and msg.priority == 3
    assert msg.headers == {"trace": "t-1"}  # nothing of the delay's own machinery
    assert not msg.redelivered and msg.delivery_count == 1
    assert msg.expiration is None


PAST_RESTART = 2.0
"""Seconds a message delayed past a broker restart falls due after the restart may have ended
(one that falls due while RabbitMQ boots may be dead-lettered before its target queue is up:
docs/operating.md)."""


@pytest.mark.requires("delay", "persistence")
async def test_a_delayed_persistent_message_survives_a_broker_restart(connect, broker_control):
    # Given a persistent message delayed past a broker restart
    bus = await connect(broker_control.url)
    q = bus.work_queue("delayed-durable")
    delay = broker_control.restart_seconds + PAST_RESTART
    sent = time.monotonic()
    await q.send("kept", delay=delay)
    # When the broker restarts before it is due
    await broker_control.restart()
    # Then it is delivered after the restart, not before its time
    after = await connect(broker_control.url)
    async with after.work_queue("delayed-durable").consume() as sub:
        body, at = await received_at(sub, timeout=30)
    assert body == "kept"
    assert at - sent >= delay


async def test_a_delay_with_a_ttl_or_a_mandatory_publish_is_refused(connect):
    bus = await connect()
    q = bus.work_queue("delay-args")
    with pytest.raises(InvalidArgument, match="ttl and delay"):
        await q.send("x", delay=1.0, ttl=5.0)
    router = bus.router("delay-args", kind="direct")
    with pytest.raises(InvalidArgument, match="mandatory and delay"):
        await router.publish("x", key="k", delay=1.0, mandatory=True)
    for bad in (-1, "soon", float("nan"), 10**10):
        with pytest.raises(InvalidArgument, match="delay"):
            await q.send("x", delay=bad)
