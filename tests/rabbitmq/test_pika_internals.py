"""The pika names the RabbitMQ transport relies on beyond pika's public API are still there,
with the parameters it uses: a pika release that moves one fails here, loudly, by name."""

from __future__ import annotations

import inspect

import pika
import pytest

import polybus.aio
from polybus.transports.rabbitmq._connection import CONSUME_BYTES, PIKA_INTERNALS, RECV_BYTES


@pytest.mark.parametrize("what", list(PIKA_INTERNALS))
def test_a_pika_method_polybus_relies_on_is_unchanged(what):
    owner, name, parameters = PIKA_INTERNALS[what]
    method = getattr(owner, name, None)
    assert method is not None, (
        f"pika {pika.__version__}: {owner.__name__}.{name} ({what}) is gone;"
        " polybus/transports/rabbitmq/_connection.py must follow it"
    )
    assert tuple(inspect.signature(method).parameters) == parameters, (
        f"pika {pika.__version__}: {owner.__name__}.{name} ({what}) now takes"
        f" {inspect.signature(method)}; polybus calls it with {parameters}"
    )


async def test_the_pika_attributes_polybus_reads_are_there_on_a_live_connection(url):
    async with polybus.aio.connect(url) as bus:
        connection = bus._transport._connection
        transport = getattr(connection, "_transport", None)
        assert transport is not None, f"pika {pika.__version__}: no connection._transport"
        assert hasattr(transport, "_sock"), f"pika {pika.__version__}: no transport._sock"
        # pika's own read-size knobs, set by polybus: still the ones its read loop uses
        assert (transport._MAX_RECV_BYTES, transport._MAX_CONSUME_BYTES) == (
            RECV_BYTES,
            CONSUME_BYTES,
        )
        source = inspect.getsource(type(transport)._consume)
        assert "_MAX_RECV_BYTES" in source and "_MAX_CONSUME_BYTES" in source, (
            f"pika {pika.__version__}: the read loop no longer uses its size knobs"
        )
        await bus.work_queue("still-works").send("x")
