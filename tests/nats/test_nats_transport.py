"""What is NATS's own: the nats-py internals polybus relies on, connection failures in words,
a message another program published, names and keys NATS's subjects could not carry as they
are, and the size JetStream carries."""

from __future__ import annotations

import asyncio

import nats
import pytest

import polybus
import polybus.aio
from polybus import SerializationError
from polybus.core.headers import DEAD_REASON
from polybus.core.limits import MAX_BODY
from polybus.testing.nats_harness import OwnedNats
from polybus.transports.nats._names import Names


async def test_the_nats_py_attributes_polybus_reads_are_there_on_a_live_connection(nats_url):
    async with polybus.aio.connect(nats_url) as bus:
        nc = bus._transport._nc
        writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
        assert writer is not None, f"nats-py {nats.__version__}: no _transport._io_writer"
        assert callable(getattr(writer.transport, "abort", None))


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("nats://127.0.0.1:1", "nothing accepts connections at 127.0.0.1:1"),
        ("nats://nosuchhost.invalid:4222", "nosuchhost.invalid:4222"),
    ],
)
def test_a_failed_connection_says_what_happened_and_where(nats_harness, url, says):
    with pytest.raises(polybus.ConnectionFailed) as caught:
        polybus.connect(f"{url}?connect_timeout=1")
    assert says in str(caught.value)
    assert "Secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("jetstream", "password", "says"),
    [(True, "Secret", "refused the user name or password"), (False, "", "JetStream is not")],
)
def test_a_server_that_cannot_serve_says_why(nats_harness, jetstream, password, says):
    server = OwnedNats(jetstream, ("--user", "alice", "--pass", "right"))
    server.start()
    try:
        url = server.url.replace("nats://", f"nats://alice:{password or 'right'}@")
        with pytest.raises(polybus.ConnectionFailed) as caught:
            polybus.connect(f"{url}?connect_timeout=1")
        assert says in str(caught.value)
        assert "Secret" not in str(caught.value)
    finally:
        server.remove()


async def test_a_message_another_program_published_is_dead_lettered_not_fatal(nats_url):
    async with polybus.aio.connect(nats_url) as bus:
        q = bus.work_queue("mixed")
        await q.declare()
        # Given a message a plain nats-py program published on the queue's subject
        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            await nc.jetstream().publish(Names("polybus").subject(q.name), b"raw bytes")
        finally:
            await nc.close()
        await q.send("ours")
        # Then the consumer goes on with polybus's messages, and the other is a dead letter
        async with q.consume() as sub:
            msg = await sub.receive(timeout=5)
            await msg.ack()
            assert msg.body == "ours"
        async with bus.work_queue("mixed.dead").consume() as dead:
            msg = await dead.receive(timeout=5)
            await msg.ack()
        assert msg.body == b"raw bytes" and msg.headers[DEAD_REASON] == "undecodable"


async def test_names_and_keys_nats_subjects_forbid_travel_as_they_are(nats_url):
    async with polybus.aio.connect(nats_url) as bus:
        q = bus.work_queue("a.b:c-d_e." + "x" * 150)
        topics = bus.router("t:topics", kind="topic")
        async with topics.subscribe(["#.>.#"]) as sub:
            await topics.publish("hit", key="a. .>..")
            await topics.publish("miss", key="a. .>x")
            await q.send("named")
            msg = await sub.receive(timeout=5)
            await msg.ack()
            assert (msg.body, msg.key) == ("hit", "a. .>..")
        assert await q.size() == 1


async def test_the_largest_message_fits_what_the_server_takes(nats_url):
    async with polybus.aio.connect(nats_url) as bus:
        # polybus's own limits are within NATS's default max_payload, headers included
        assert bus._transport._nc.max_payload >= MAX_BODY + 64 * 1024
        q = bus.work_queue("big")
        with pytest.raises(SerializationError):
            await q.send(b"x" * (MAX_BODY + 1))
        await asyncio.wait_for(q.send(b"x" * MAX_BODY), 10)
        assert await q.size() == 1
