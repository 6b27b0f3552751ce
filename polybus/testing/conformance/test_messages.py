"""Messages: bodies and properties travel intact on every transport."""

from __future__ import annotations

import time

import pytest

from polybus import ReceiveTimeout, SerializationError


async def roundtrip(bus, body, **options):
    q = bus.work_queue("props")
    await q.send(body, **options)
    async with q.consume() as sub:
        msg = await sub.receive(timeout=5)
        await msg.ack()
    return msg


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\xffraw bytes",
        b"",
        "unicode: h\u00e9llo \u4e16\u754c",
        "",
        {"nested": {"list": [1, 2.5, None, True], "text": "x"}},
        [1, 2, 3],
        42,
        None,
    ],
    ids=["bytes", "empty-bytes", "str", "empty-str", "dict", "list", "int", "none"],
)
async def test_body_round_trips_with_its_type(connect, body):
    bus = await connect()
    msg = await roundtrip(bus, body)
    assert msg.body == body
    assert type(msg.body) is type(body)


async def test_properties_travel_with_the_message(connect):
    bus = await connect()
    before = time.time()
    msg = await roundtrip(
        bus,
        {"x": 1},
        headers={"trace": "abc", "attempt": 2, "ok": True},
        message_id="msg-123",
        correlation_id="corr-9",
        reply_to="somewhere",
        ttl=60.0,
        priority=3,
    )
    assert msg.headers["trace"] == "abc"
    assert msg.headers["attempt"] == 2
    assert msg.headers["ok"] is True
    assert msg.message_id == "msg-123"
    assert msg.correlation_id == "corr-9"
    assert msg.reply_to == "somewhere"
    assert msg.priority == 3
    assert msg.expiration == pytest.approx(60.0)
    assert msg.content_type == "application/json"
    assert msg.data == b'{"x":1}'
    assert msg.key == msg.key  # routing key is exposed
    assert before - 1 <= msg.timestamp <= time.time() + 1
    assert msg.persistent


async def test_every_message_gets_a_unique_id(connect):
    bus = await connect()
    q = bus.work_queue("ids")
    await q.send_many(["a", "b", "c"])
    async with q.consume(prefetch=3) as sub:
        ids = []
        for _ in range(3):
            msg = await sub.receive(timeout=5)
            ids.append(msg.message_id)
            await msg.ack()
    assert len(set(ids)) == 3 and all(ids)


async def test_msgpack_codec_round_trips(connect):
    pytest.importorskip("msgpack")
    sender = await connect(codec="msgpack")
    receiver = await connect()
    await sender.work_queue("packed").send({"k": [1, 2], "b": b"bin"})
    async with receiver.work_queue("packed").consume() as sub:
        msg = await sub.receive(timeout=5)
        await msg.ack()
    assert msg.content_type == "application/msgpack"
    assert msg.body == {"k": [1, 2], "b": b"bin"}


async def test_unencodable_body_raises_and_sends_nothing(connect):
    bus = await connect()
    q = bus.work_queue("unencodable")
    with pytest.raises(SerializationError, match="set"):
        await q.send({1, 2, 3})
    with pytest.raises(SerializationError):
        await q.send_many(["fine", object()])
    async with q.consume() as sub:
        with pytest.raises(ReceiveTimeout):
            await sub.receive(timeout=0.5)


async def test_a_header_not_every_broker_can_carry_is_refused_and_nothing_is_sent(connect):
    bus = await connect()
    q = bus.work_queue("bad-headers")
    nested_float = {"outer": [1, {"inner": 1.5}]}
    for headers in ({"h": 1.5}, {"h": b"raw"}, {"h": 2**64}, {"h": object()}, nested_float):
        with pytest.raises(SerializationError, match="not every broker"):
            await q.send("x", headers=headers)
    with pytest.raises(SerializationError):
        await q.send_many(["a", "b"], headers={"when": (2026, 11, 25)})
    await q.send("fine", headers={"deep": {"list": [1, "two", None, True, {"x": -(2**63)}]}})
    async with q.consume() as sub:
        msg = await sub.receive(timeout=5)
        await msg.ack()
        assert msg.headers["deep"] == {"list": [1, "two", None, True, {"x": -(2**63)}]}
        with pytest.raises(ReceiveTimeout):
            await sub.receive(timeout=0.5)
