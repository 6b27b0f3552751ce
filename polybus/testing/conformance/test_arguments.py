"""Bad arguments: each fails its own call, at once, with the same named error on every
transport, and touches no one else's send; a call racing ``close()`` returns or raises
``Closed``."""

from __future__ import annotations

import asyncio
import time

import pytest

from polybus import (
    Closed,
    InvalidArgument,
    InvalidName,
    InvalidURL,
    PolybusError,
    SerializationError,
)
from polybus.core.limits import MAX_BODY, MAX_HEADERS
from polybus.testing.conformance._receive import drain

BOUND = 10.0  # seconds within which every call here returns or raises


async def test_a_bad_argument_fails_its_own_call_and_no_one_elses(connect):
    # Given a queue with priorities and many sends in flight at once
    bus = await connect()
    q = bus.work_queue("mixed", max_priority=5)
    await q.declare()
    good = [q.send(i, priority=i % 5) for i in range(20)]
    bad = q.send("x", priority="high")
    # When one of them has a bad argument
    results = await asyncio.wait_for(
        asyncio.gather(*good[:10], bad, *good[10:], return_exceptions=True), BOUND
    )
    # Then that one raises, and every other send went through
    assert isinstance(results[10], InvalidArgument)
    assert [r for i, r in enumerate(results) if i != 10] == [None] * 20
    async with q.consume(prefetch=20) as sub:
        assert sorted(await drain(sub, 20)) == list(range(20))


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda q: q.send("x", headers="s"), SerializationError),
        (lambda q: q.send("x", headers={1: "not a str name"}), SerializationError),
        (lambda q: q.send("x", ttl="abc"), InvalidArgument),
        (lambda q: q.send("x", ttl=-1), InvalidArgument),
        (lambda q: q.send("x", ttl=0), InvalidArgument),
        (lambda q: q.send("x", ttl=float("nan")), InvalidArgument),
        (lambda q: q.send("x", priority="high"), InvalidArgument),
        (lambda q: q.send("x", priority=300), InvalidArgument),
        (lambda q: q.send("x", priority=-1), InvalidArgument),
        (lambda q: q.send("x", priority=True), InvalidArgument),
        (lambda q: q.send("x", message_id=123), InvalidArgument),
        (lambda q: q.send("x", message_id="m" * 256), InvalidArgument),
        (lambda q: q.send("x", correlation_id=b"bytes"), InvalidArgument),
        (lambda q: q.send("x", persistent="yes"), InvalidArgument),
        (lambda q: q.send("x", delya=5), InvalidArgument),
        (lambda q: q.send_many(["x"], headers=[("a", 1)]), SerializationError),
        (lambda q: q.send(b"x" * (MAX_BODY + 1)), SerializationError),
        (lambda q: q.send("\ud800"), SerializationError),
    ],
    ids=[
        "headers-str",
        "header-name-int",
        "ttl-str",
        "ttl-negative",
        "ttl-zero",
        "ttl-nan",
        "priority-str",
        "priority-300",
        "priority-negative",
        "priority-bool",
        "message-id-int",
        "message-id-too-long",
        "correlation-id-bytes",
        "persistent-str",
        "misspelled-option",
        "headers-list",
        "body-over-the-limit",
        "lone-surrogate",
    ],
)
async def test_a_bad_send_raises_a_named_error_and_sends_nothing(connect, call, error):
    bus = await connect()
    q = bus.work_queue("refused", max_priority=9)
    with pytest.raises(error):
        await asyncio.wait_for(call(q), BOUND)
    assert await q.size() == 0


async def test_a_misspelled_send_option_names_the_option_it_meant(connect):
    bus = await connect()
    with pytest.raises(InvalidArgument, match="did you mean 'ttl'"):
        await bus.work_queue("typo").send("x", tll=5)
    with pytest.raises(InvalidArgument, match="did you mean 'headers'"):
        await bus.pubsub("typo").publish("x", header={"a": 1})


async def test_headers_larger_than_one_amqp_frame_are_refused_before_sending(connect):
    # RabbitMQ drops the connection for properties over its frame size; every transport
    # refuses them the same way, before anything is sent
    bus = await connect()
    q = bus.work_queue("big-headers")
    with pytest.raises(SerializationError, match="AMQP field table"):
        await q.send("x", headers={"big": "h" * 200_000})
    with pytest.raises(SerializationError, match="AMQP field table"):
        await q.send("x", headers={"many": list(range(MAX_HEADERS // 8))})
    await q.send("fits", headers={"big": "h" * (MAX_HEADERS // 2)})
    async with q.consume() as sub:
        msg = await sub.receive(timeout=BOUND)
        await msg.ack()
    assert msg.body == "fits" and len(msg.headers["big"]) == MAX_HEADERS // 2


async def test_the_largest_body_travels_with_the_largest_headers(connect):
    bus = await connect()
    q = bus.work_queue("largest")
    body = b"b" * MAX_BODY
    await q.send(body, headers={"big": "h\u00e9\n" * (MAX_HEADERS // 10)}, message_id="m" * 255)
    async with q.consume() as sub:
        msg = await sub.receive(timeout=BOUND)
        await msg.ack()
    assert msg.body == body and msg.headers["big"] == "h\u00e9\n" * (MAX_HEADERS // 10)


async def test_reserved_header_names_are_refused(connect):
    bus = await connect()
    q = bus.work_queue("reserved")
    for name in ("x-delivery-count", "x-polybus-timestamp", "x-polybus-anything"):
        with pytest.raises(SerializationError, match="reserved"):
            await q.send("x", headers={name: "nope"})
    assert await q.size() == 0


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda bus: bus.work_queue("q", max_priority=1000), InvalidArgument),
        (lambda bus: bus.work_queue("q", max_priority=0), InvalidArgument),
        (lambda bus: bus.work_queue("q", message_ttl=-5), InvalidArgument),
        (lambda bus: bus.work_queue("q", durable="yes"), InvalidArgument),
        (lambda bus: bus.work_queue("q", dead_letter="has space"), InvalidName),
        (lambda bus: bus.work_queue("q").consume(prefetch=-5), InvalidArgument),
        (lambda bus: bus.work_queue("q").consume(prefetch=0), InvalidArgument),
        (lambda bus: bus.work_queue("q").consume(prefetch=10**6), InvalidArgument),
        (lambda bus: bus.pubsub("p").subscribe(prefetch="many"), InvalidArgument),
        (lambda bus: bus.pubsub("p", durable=None), InvalidArgument),
        (lambda bus: bus.router("r", kind="topic").subscribe("kern.*"), InvalidArgument),
        (lambda bus: bus.router("r", kind="topic").subscribe(42), InvalidArgument),
        (lambda bus: bus.router("r", kind="fanout"), InvalidArgument),
    ],
    ids=[
        "max-priority-1000",
        "max-priority-0",
        "message-ttl-negative",
        "durable-str",
        "dead-letter-name",
        "prefetch-negative",
        "prefetch-zero",
        "prefetch-million",
        "prefetch-str",
        "durable-none",
        "keys-str",
        "keys-int",
        "router-kind",
    ],
)
async def test_bad_pattern_options_raise_at_once(connect, make, error):
    bus = await connect()
    with pytest.raises(error):
        make(bus)


async def test_bad_handler_options_raise_at_once(connect):
    bus = await connect()
    q = bus.work_queue("handled")
    with pytest.raises(InvalidArgument):
        await q.worker(lambda msg: None, concurrency=0)
    with pytest.raises(InvalidArgument):
        await q.worker(lambda msg: None, retries=-1)
    with pytest.raises(InvalidArgument):
        await q.worker(lambda msg: None, prefetch=10**6)
    with pytest.raises(InvalidArgument):
        await bus.rpc("r").serve(lambda body: body, concurrency="4")
    with pytest.raises(InvalidArgument):
        await bus.rpc("r").call(1, timeout=-1)


async def test_a_bad_receive_timeout_raises(connect):
    bus = await connect()
    async with bus.work_queue("waits").consume() as sub:
        for timeout in (-1, "soon", float("nan")):
            with pytest.raises(InvalidArgument):
                await sub.receive(timeout=timeout)


async def test_any_valid_name_has_its_dead_letter_queue(connect, target):
    # Given the longest valid name, whose "<name>.dead" would be too long
    bus = await connect()
    name = "n" * 200
    q = bus.work_queue(name)
    await q.send("kept")
    async with q.consume() as sub:
        await (await sub.receive(timeout=BOUND)).reject()
    if q.dead_letter_queue is not None:  # where the transport has dead letters
        assert q.dead_letter_queue.endswith(".dead")
        dead = bus.work_queue(q.dead_letter_queue.removeprefix(f"{target.namespace}."))
        async with dead.consume() as sub:
            assert await drain(sub, 1) == ["kept"]


@pytest.mark.parametrize(
    "options",
    [
        "namespce=x",
        "namespace=",
        "namespace=has space",
        "namespace=amq",
        f"namespace={'n' * 300}",
        "operation_timeout=0",
        "operation_timeout=soon",
    ],
)
async def test_bad_url_options_are_refused(target, options):
    url = target.harness.url(target.namespace).split("?")[0]
    with pytest.raises(InvalidURL):
        await target.connect(f"{url}?{options}")


async def test_every_call_racing_close_returns_or_raises_closed(connect):
    # Given many sends in flight
    bus = await connect()
    q = bus.work_queue("racing")
    await q.declare()
    outcomes: list[BaseException | None] = []

    async def keep_sending() -> None:
        for i in range(50):
            try:
                await q.send(i)
            except PolybusError as exc:
                outcomes.append(exc)
                return
            outcomes.append(None)

    senders = [asyncio.ensure_future(keep_sending()) for _ in range(20)]
    await asyncio.sleep(0.05)
    # When the bus closes under them
    started = time.monotonic()
    await bus.close()
    await asyncio.wait_for(asyncio.gather(*senders), BOUND)
    # Then each send returned or raised Closed, and none waited past the bound
    assert time.monotonic() - started < BOUND
    assert all(o is None or isinstance(o, Closed) for o in outcomes), [
        repr(o) for o in outcomes if o is not None and not isinstance(o, Closed)
    ]
    with pytest.raises(Closed):
        await q.send("after close")
