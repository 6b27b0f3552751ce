"""Fixtures for the NATS-specific tests: the shared server, namespaced and cleaned up."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from polybus.testing.nats_harness import NatsHarness
from polybus.testing.plugin import skip_unless_available


@pytest.fixture(scope="session")
def nats_harness() -> Iterator[NatsHarness]:
    harness = NatsHarness()
    skip_unless_available("nats", harness)
    yield harness
    harness.shutdown()


@pytest.fixture
def namespace(nats_harness: NatsHarness) -> Iterator[str]:
    name = f"n{os.urandom(5).hex()}"
    yield name
    nats_harness.cleanup(name)


@pytest.fixture
def nats_url(nats_harness: NatsHarness, namespace: str) -> str:
    """A URL on the shared server whose queues all start with ``<namespace>.``."""
    return nats_harness.url(namespace)
