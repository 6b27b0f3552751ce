"""Bad input fails early with a named PolybusError that says what to do."""

from __future__ import annotations

import pytest

from polybus import (
    DeclarationConflict,
    InvalidName,
    InvalidURL,
    PolybusError,
    UnknownScheme,
)


async def test_redeclaring_a_queue_with_other_options_is_a_conflict(connect):
    first, second = await connect(), await connect()
    await first.work_queue("conflicted", durable=True).declare()
    with pytest.raises(DeclarationConflict):
        await second.work_queue("conflicted", durable=False).declare()
    # the connection stays usable
    await second.work_queue("conflicted", durable=True).send("still works")
    assert await second.work_queue("conflicted", durable=True).size() == 1


async def test_redeclaring_an_exchange_as_another_kind_is_a_conflict(connect):
    first, second = await connect(), await connect()
    await first.router("kinds", kind="direct").declare()
    with pytest.raises(DeclarationConflict):
        await second.router("kinds", kind="topic").declare()
    with pytest.raises(DeclarationConflict):
        await second.pubsub("kinds").declare()
    await second.router("kinds", kind="direct").publish("ok", key="k")


@pytest.mark.parametrize(
    "name", ["", "has space", "slash/name", "amq.reserved", "x" * 201, "tab\t"]
)
async def test_invalid_queue_and_exchange_names_are_rejected(connect, name):
    bus = await connect()
    with pytest.raises(InvalidName):
        bus.work_queue(name)
    with pytest.raises(InvalidName):
        bus.pubsub(name)


async def test_invalid_routing_keys_and_patterns_are_rejected(connect):
    bus = await connect()
    topics = bus.router("validated", kind="topic")
    with pytest.raises(InvalidName):
        await topics.publish("x", key="a.*")
    with pytest.raises(InvalidName):
        await topics.publish("x", key="k" * 256)
    with pytest.raises(InvalidName):
        topics.subscribe(["a*.b"])
    with pytest.raises(InvalidName):
        topics.subscribe(["a.#b"])
    with pytest.raises(InvalidName):
        topics.subscribe([])
    direct = bus.router("validated_direct", kind="direct")
    with pytest.raises(InvalidName):
        direct.subscribe(["a.#"])


async def test_unknown_scheme_names_the_known_ones(target):
    with pytest.raises(UnknownScheme, match="amqp"):
        await target.connect("amqq://localhost")


async def test_malformed_url_is_rejected(target):
    with pytest.raises(InvalidURL):
        await target.connect("not a url")
    with pytest.raises(InvalidURL):
        await target.connect("redis://localhost:notaport/0")


async def test_every_error_is_a_polybus_error(target):
    with pytest.raises(PolybusError):
        await target.connect("nosuchbroker://x")
