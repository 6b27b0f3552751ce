"""Fixtures for the Redis-specific tests: the shared server (namespaced, cleaned up) and a
test-owned ``redis-server`` with AOF for the restart tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from polybus.testing.plugin import skip_unless_available
from polybus.testing.redis_harness import OwnedRedis, RedisHarness


@pytest.fixture(scope="session")
def harness() -> Iterator[RedisHarness]:
    harness = RedisHarness()
    skip_unless_available("redis", harness)
    yield harness
    harness.shutdown()


@pytest.fixture
def namespace(harness: RedisHarness) -> Iterator[str]:
    name = f"rt{os.urandom(5).hex()}"
    yield name
    harness.cleanup(name)


@pytest.fixture
def redis_url(harness: RedisHarness, namespace: str) -> str:
    """A URL on the shared server whose keys all live under ``polybus:<namespace>:``."""
    return harness.url(namespace)


@pytest.fixture(params=["redis", "fakeredis"])
def any_url(request: pytest.FixtureRequest, namespace: str) -> str:
    """The shared server's URL, then a fakeredis one: tests of code both run."""
    if request.param == "fakeredis":
        return f"fakeredis://{namespace}?namespace={namespace}&heartbeat=2"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
def owned_redis() -> Iterator[OwnedRedis]:
    """A fresh test-owned server (AOF, appendfsync always), removed after the test."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = OwnedRedis()
    server.start()
    yield server
    server.remove()
