"""The Lua topic matcher routes exactly as ``polybus.core.topic.topic_matches`` (RabbitMQ's rule),
on thousands of random patterns and keys, on real Redis and on fakeredis."""

from __future__ import annotations

import random

import pytest
from redis_commands import raw, stream_key

import polybus.aio
from polybus.core.topic import topic_matches
from polybus.core.transport import Envelope, ExchangeKind, QueueOptions

PATTERN_WORDS = ["a", "b", "c", "", "*", "#"]
KEY_WORDS = ["a", "b", "c", ""]


def random_words(rng: random.Random, alphabet: list[str]) -> str:
    return ".".join(rng.choice(alphabet) for _ in range(rng.randint(0, 5)))


@pytest.mark.parametrize("seed", range(4))
async def test_lua_topic_routing_equals_the_python_matcher(any_url, seed):
    rng = random.Random(seed)
    patterns = sorted({random_words(rng, PATTERN_WORDS) for _ in range(60)})
    keys = sorted({random_words(rng, KEY_WORDS) for _ in range(60)})
    async with polybus.aio.connect(any_url) as bus:
        transport = bus._transport
        exchange = bus._qualify("topics", "exchange")
        await transport.declare_exchange(exchange, ExchangeKind.TOPIC, True)
        queues = {}
        for n, pattern in enumerate(patterns):
            queue = bus._qualify(f"q{n}")
            await transport.declare_queue(queue, QueueOptions())
            await transport.bind(queue, exchange, pattern)
            queues[pattern] = queue
        await transport.publish_many(exchange, [(key, Envelope(b"")) for key in keys])
        for pattern, queue in queues.items():
            entries = await raw(bus, "XRANGE", stream_key(bus, queue), "-", "+")
            routed = [dict(zip(f[::2], f[1::2], strict=True))[b"k"].decode() for _, f in entries]
            assert routed == [k for k in keys if topic_matches(pattern, k)], pattern
