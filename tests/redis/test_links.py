"""The pipelined links of the Redis transport: what happens when a reply is lost, a queue is
deleted under a sender, or the server stops answering."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest
from redis import exceptions as redis_errors
from redis_commands import raw, stream_key

import polybus.aio
from polybus import Unroutable
from polybus.core.transport import Envelope
from polybus.transports.redis._wire import Endpoint, Link, SocketWire, command


def drop_the_next_read(consumer):
    """Make the consumer's connection break when an XREADGROUP brings entries, after Redis
    has moved them onto the consumer's pending list: the reply is lost on its way."""
    link = consumer.link
    send = link.send

    async def send_and_lose(commands, **options):
        replies = await send(commands, **options)
        if b"XREADGROUP" not in commands[0][:40]:
            return replies
        lost = asyncio.get_running_loop().create_future()

        def relay(done):
            if done.exception() is not None:
                lost.set_exception(done.exception())
            elif done.result()[0] is None:  # it timed out, with nothing in it
                lost.set_result(done.result())
            else:
                link.send = send
                error = redis_errors.ConnectionError("the test lost this reply")
                link._wire.close(error)
                lost.set_exception(error)

        replies.add_done_callback(relay)
        return lost

    link.send = send_and_lose


async def test_entries_of_a_read_whose_reply_was_lost_are_delivered_again(any_url):
    async with polybus.aio.connect(any_url) as bus:
        q = bus.work_queue("lost", dead_letter=None)
        async with q.consume(prefetch=10) as sub:
            # Given a consumer whose next read will lose its reply
            (consumer,) = bus._transport._consumers.values()
            drop_the_next_read(consumer)
            # When a message is read by it, and the reply with it never arrives
            await q.send("a")
            # Then the consumer returns it to the queue and gets it again, a second delivery
            msg = await sub.receive(timeout=10)
            assert (msg.body, msg.redelivered, msg.delivery_count) == ("a", True, 2)
            await msg.ack()
        assert await q.size() == 0


async def test_a_send_to_a_queue_deleted_elsewhere_writes_nothing(any_url):
    async with polybus.aio.connect(any_url) as bus, polybus.aio.connect(any_url) as other:
        transport = bus._transport
        q = bus.work_queue("doomed", dead_letter=None)
        await q.send("first")  # declared here: later sends go straight to its stream
        # Given the queue deleted by another connection
        await other._transport.delete_queue(q.name)
        # When this bus sends to it again
        await q.send("dropped")
        with pytest.raises(Unroutable):
            await transport.publish("", q.name, Envelope(b"refused"), mandatory=True)
        # Then the message went nowhere: no stream was made again for it
        assert await raw(bus, "EXISTS", stream_key(bus, q.name)) == 0


async def test_a_server_that_stops_answering_fails_what_waits_on_it(owned_redis):
    endpoint = Endpoint("127.0.0.1", owned_redis.port, 0, None, None, None, 2.0)
    link = Link(lambda: SocketWire.open(endpoint), timeout=0.5)
    try:
        assert await link.call(command("PING")) == [b"PONG"]
        # Given a server that hangs with its connections open
        with owned_redis.frozen():
            started = time.monotonic()
            # Then a command waits only the link's timeout
            with pytest.raises(redis_errors.TimeoutError):
                await link.call(command("PING"))
            assert time.monotonic() - started < 2
        # And the next command goes out on a new connection
        assert await link.call(command("PING")) == [b"PONG"]
    finally:
        await link.close()


async def test_closing_a_consumer_with_a_read_in_flight_leaves_no_failure_unread(any_url):
    unhandled = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _loop, context: unhandled.append(context)
    )
    async with polybus.aio.connect(any_url) as bus:
        q = bus.work_queue("in-flight", dead_letter=None)
        await q.send_many(list(range(100)))
        async with q.consume(prefetch=100) as sub:
            held = [await sub.receive(timeout=5) for _ in range(100)]
            for msg in held[:50]:  # the 50th ack makes room for a refill: its read goes out
                await msg.ack()
        # closed with that read in flight: its reply is never read
        del held, msg, sub  # what still holds the consumer, and the read it sent
    gc.collect()
    assert unhandled == []


async def test_a_publishing_round_that_fails_unexpectedly_fails_only_its_own_sends(any_url):
    # Given a publisher whose next round meets a bug (an exception polybus does not expect)
    async with polybus.aio.connect(any_url) as bus:
        q = bus.work_queue("rounds")
        await q.declare()
        publisher = bus._transport._publisher
        real_round = publisher._round
        broken = True

        async def round_with_a_bug(batches):
            nonlocal broken
            if broken:
                broken = False
                raise ValueError("a bug in the round")
            await real_round(batches)

        publisher._round = round_with_a_bug
        # When several sends share that round
        started = time.monotonic()
        outcomes = await asyncio.gather(*(q.send(n) for n in range(5)), return_exceptions=True)
        # Then each of them raises PublishFailed at once, none hangs, and the next round works
        assert time.monotonic() - started < 2
        assert outcomes and all(isinstance(o, polybus.PublishFailed) for o in outcomes), outcomes
        assert "a bug in the round" in str(outcomes[0])
        await q.send("after")
        async with q.consume() as sub:
            assert (await sub.receive(timeout=5)).body == "after"
