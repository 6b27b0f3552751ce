"""RabbitMQ-specific behaviour: conflicts, confirms, returns, recovery, crashed consumers."""

from __future__ import annotations

import asyncio
import time

import pika
import pytest

import polybus.aio
from polybus import ConnectionFailed, DeclarationConflict, PublishFailed, Unroutable
from polybus.core.transport import Envelope, QueueOptions


async def test_precondition_failed_is_a_conflict_and_the_transport_stays_usable(url, namespace):
    async with polybus.aio.connect(url) as bus:
        transport = bus._transport
        name = f"{namespace}.conflict"
        await transport.declare_queue(name, QueueOptions(durable=True))
        with pytest.raises(DeclarationConflict, match="exists as a quorum queue"):
            await transport.declare_queue(name, QueueOptions(durable=True, max_priority=5))
        # the channel the broker closed is replaced: publishing and counting still work
        await transport.publish("", name, Envelope(b"x"))
        assert await transport.queue_size(name) == 1


async def test_exclusive_queue_of_another_connection_is_a_conflict(url, namespace):
    async with polybus.aio.connect(url) as owner, polybus.aio.connect(url) as other:
        name = f"{namespace}.mine"
        options = QueueOptions(durable=False, exclusive=True)
        await owner._transport.declare_queue(name, options)
        with pytest.raises(DeclarationConflict, match="RESOURCE_LOCKED"):
            await other._transport.declare_queue(name, options)


async def test_confirms_are_pipelined(url):
    # Given a publisher whose sends record how many publishes await their confirm
    async with polybus.aio.connect(url) as bus:
        q = bus.work_queue("pipelined")
        await q.declare()
        publisher = await bus._transport._get_publisher()
        in_flight: list[int] = []
        send = publisher.send

        def recording(item):
            send(item)
            in_flight.append(len(publisher._pending))

        publisher.send = recording
        # When 500 messages are sent concurrently
        await asyncio.gather(*(q.send(i) for i in range(500)))
        assert await q.size() == 500
    # Then many were unconfirmed at once: not one round trip per message
    assert max(in_flight) > 50, in_flight[:10]


async def test_a_nacked_publish_raises(url, pika_url, namespace):
    # Given a queue that refuses messages beyond its first (declared by a plain pika program)
    name = f"{namespace}.full"
    connection = pika.BlockingConnection(pika.URLParameters(pika_url))
    connection.channel().queue_declare(
        name, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    connection.close()
    async with polybus.aio.connect(url) as bus:
        await bus._transport.publish("", name, Envelope(b"fits"))
        # Then the broker's nack is a PublishFailed
        with pytest.raises(PublishFailed, match="nack"):
            await bus._transport.publish("", name, Envelope(b"refused"))


async def test_returns_are_matched_to_their_own_publish(url):
    async with polybus.aio.connect(url) as bus:
        router = bus.router("matched", kind="direct")
        async with router.subscribe(["known"]) as sub:
            # When routable and unroutable mandatory messages are in flight together
            results = await asyncio.gather(
                *(
                    router.publish(i, key="known" if i % 2 else "unknown", mandatory=True)
                    for i in range(40)
                ),
                return_exceptions=True,
            )
            # Then exactly the unroutable ones raised
            assert [isinstance(r, Unroutable) for r in results] == [i % 2 == 0 for i in range(40)]
            bodies = [(await sub.receive(timeout=5)).body for _ in range(20)]
    assert bodies == list(range(1, 40, 2))


async def test_connecting_to_a_dead_port_fails_fast():
    started = time.monotonic()
    with pytest.raises(ConnectionFailed):
        await polybus.aio.connect("amqp://guest:guest@127.0.0.1:1/")
    assert time.monotonic() - started < 5


async def test_unsupported_header_value_is_a_serialization_error(url):
    from polybus import SerializationError

    async with polybus.aio.connect(url) as bus:
        with pytest.raises(SerializationError, match="header"):
            await bus.work_queue("floats").send("x", headers={"ratio": 0.5})


async def test_restart_mid_stream_loses_no_confirmed_message(rabbit, namespace):
    # Given a publisher and a consumer streaming through the test-owned node
    owned = rabbit.restartable_url(namespace)
    assert owned is not None
    async with polybus.aio.connect(owned) as producer, polybus.aio.connect(owned) as consumer:
        q = producer.work_queue("stream")
        await q.declare()
        confirmed: list[int] = []
        received: set[int] = set()
        stop = asyncio.Event()
        caught_up = asyncio.Event()

        def check() -> None:
            if stop.is_set() and set(confirmed) <= received:
                caught_up.set()

        async def produce() -> None:
            i = 0
            while not stop.is_set():
                try:
                    await q.send(i)
                    confirmed.append(i)
                except (ConnectionFailed, PublishFailed):
                    pass  # raised, not dropped: the caller knows it was not confirmed
                i += 1
                await asyncio.sleep(0.005)

        async def consume() -> None:
            async with consumer.work_queue("stream").consume(prefetch=20) as sub:
                while True:
                    msg = await sub.receive()
                    received.add(msg.body)
                    await msg.ack()
                    check()

        producing = asyncio.ensure_future(produce())
        consuming = asyncio.ensure_future(consume())
        await asyncio.sleep(0.5)
        # When the broker restarts mid-stream
        await asyncio.to_thread(rabbit.restart)
        await asyncio.sleep(2)
        stop.set()
        await producing
        # Then the consumer resumed and got every confirmed message (duplicates allowed)
        check()
        await asyncio.wait_for(caught_up.wait(), 30)
        consuming.cancel()
        await asyncio.gather(consuming, return_exceptions=True)
        assert confirmed and set(confirmed) <= received
        assert max(received) > confirmed[0] + 10  # it kept flowing after the restart


async def test_a_dead_letter_keeps_rabbitmqs_own_x_death_beside_polybus_headers(url):
    # Given a message RabbitMQ dead-letters itself (a reject, through the dead-letter exchange)
    async with polybus.aio.connect(url) as bus:
        q = bus.work_queue("orders")
        await q.send("no")
        async with q.consume() as sub:
            await (await sub.receive(timeout=5)).reject()
        # When it is read from the dead-letter queue
        async with bus.work_queue("orders.dead").consume() as dead:
            msg = await dead.receive(timeout=5)
            await msg.ack()
    # Then it carries polybus's headers and RabbitMQ's x-death, read as plain values
    assert msg.headers["x-polybus-dead-reason"] == "rejected"
    assert msg.headers["x-polybus-dead-queue"] == q.name
    (death,) = msg.headers["x-death"]
    assert death["queue"] == q.name and death["reason"] == "rejected"
    assert type(death["count"]) is int and death["count"] == 1
    assert isinstance(death["time"], int)  # an AMQP timestamp, as seconds since the epoch
