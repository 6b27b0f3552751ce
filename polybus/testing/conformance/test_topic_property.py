"""The topic matcher equals RabbitMQ's topic exchange on random keys and patterns.

Transports route with (or re-implement) ``topic_matches``; the routing-table test checks they
agree with it, and this property test checks it against a live RabbitMQ whenever one answers.
"""

from __future__ import annotations

import os
import uuid

import pytest

from polybus.core.topic import topic_matches

hypothesis = pytest.importorskip("hypothesis")
pika = pytest.importorskip("pika")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

RABBITMQ_URL = os.environ.get("POLYBUS_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

words = st.sampled_from(["a", "b", "c", ""])
keys = st.lists(words, min_size=0, max_size=4).map(".".join)
patterns = st.lists(st.sampled_from(["a", "b", "*", "#", ""]), min_size=0, max_size=4).map(".".join)


@pytest.fixture(scope="module")
def rabbit():
    try:
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    except Exception as exc:
        if "rabbitmq" in os.environ.get("POLYBUS_REQUIRE", ""):
            pytest.fail(f"RabbitMQ is required but unreachable: {exc}")
        pytest.skip(f"no live RabbitMQ at {RABBITMQ_URL}: {exc}")
    channel = connection.channel()
    channel.confirm_delivery()
    exchange = f"polybus-topic-probe-{uuid.uuid4().hex}"
    channel.exchange_declare(exchange, "topic")
    yield channel, exchange
    channel.exchange_delete(exchange)
    connection.close()


def rabbitmq_routes(rabbit, pattern: str, routing_keys: list[str]) -> list[str]:
    channel, exchange = rabbit
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, exchange, pattern)
    for key in routing_keys:
        channel.basic_publish(exchange, key, key.encode() or b"<empty>")
    got = []
    for _ in routing_keys:
        method, _props, _body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        got.append(method.routing_key)
    channel.queue_delete(queue)
    return got


@settings(max_examples=150, deadline=None)
@given(pattern=patterns, routing_keys=st.lists(keys, min_size=1, max_size=8, unique=True))
def test_topic_matcher_agrees_with_a_live_rabbitmq(rabbit, pattern, routing_keys):
    expected = rabbitmq_routes(rabbit, pattern, routing_keys)
    assert [k for k in routing_keys if topic_matches(pattern, k)] == expected
