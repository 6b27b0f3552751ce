"""Fixtures for RabbitMQ-specific tests: the shared broker (namespaced) and a test-owned node."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from polybus.testing.plugin import skip_unless_available
from polybus.testing.rabbitmq_harness import SHARED_URL, RabbitMQHarness


@pytest.fixture(scope="session")
def rabbit() -> Iterator[RabbitMQHarness]:
    harness = RabbitMQHarness()
    skip_unless_available("rabbitmq", harness)
    yield harness
    harness.shutdown()


@pytest.fixture
def namespace(rabbit: RabbitMQHarness) -> Iterator[str]:
    name = f"r{os.urandom(5).hex()}"
    yield name
    rabbit.cleanup(name)


@pytest.fixture
def url(rabbit: RabbitMQHarness, namespace: str) -> str:
    """A URL on the shared broker whose names all start with ``<namespace>.``."""
    return rabbit.url(namespace)


@pytest.fixture
def pika_url(rabbit: RabbitMQHarness) -> str:
    """The shared broker's URL, for plain pika programs."""
    return SHARED_URL
