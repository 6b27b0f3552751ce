"""Fault tests that run the same body on every broker: killed consumer processes, a broker
restarted mid-stream, a connection stalled in a proxy.

Each test takes ``broker``, parametrized over ``BROKERS``: a URL on a *test-owned* broker (the
harness's ``restartable_url``: its own process, port and data directory), one per kind, started
on first use and stopped at the end of the session. The machine's shared services are never
stopped or reconfigured. A broker that is unavailable is a skip saying why — a failure where
``POLYBUS_REQUIRE`` names it. Every test gets its own namespace on the owned broker, so tests
never see each other's queues.

The tests print their figures (``pytest -s`` shows them) and repeat them in their assertion
messages.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from polybus.testing.harness import BrokerHarness, load_harness, required
from polybus.testing.plugin import skip_unless_available

BROKERS = ("redis", "rabbitmq", "nats")
SERVER_BINARY = {"redis": "redis-server", "rabbitmq": "rabbitmq-server", "nats": "nats-server"}


@dataclass
class OwnedBroker:
    """A test-owned broker of one kind, and this test's namespaced URL on it."""

    name: str
    harness: BrokerHarness
    namespace: str
    url: str  # namespaced; Redis's carries heartbeat=2 (the harness's test options)

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        assert parts.hostname is not None and parts.port is not None, self.url
        return parts.hostname, parts.port

    def with_options(self, **options: Any) -> str:
        """This test's URL with more query options (``operation_timeout=2``, …)."""
        return _add_options(self.url, options)

    def via(self, port: int, **options: Any) -> str:
        """This test's URL, reaching the broker through ``127.0.0.1:port`` (a proxy)."""
        parts = urlsplit(self.url)
        userinfo, _, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
        return _add_options(urlunsplit(parts._replace(netloc=netloc)), options)

    def restart(self) -> None:
        """Restart the broker; returns once it accepts connections again."""
        self.harness.restart()


def _add_options(url: str, options: dict[str, Any]) -> str:
    if not options:
        return url
    query = "&".join(f"{key}={value}" for key, value in options.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


@pytest.fixture(scope="session")
def owned_harnesses() -> Iterator[dict[str, BrokerHarness | str]]:
    """The harness of each broker kind, loaded on first use; their owned brokers are stopped
    at the end of the session."""
    loaded: dict[str, BrokerHarness | str] = {}
    yield loaded
    for harness in loaded.values():
        if isinstance(harness, BrokerHarness):
            harness.shutdown()


@pytest.fixture(params=BROKERS)
def broker(
    request: pytest.FixtureRequest, owned_harnesses: dict[str, BrokerHarness | str]
) -> OwnedBroker:
    name: str = request.param
    if name not in owned_harnesses:
        owned_harnesses[name] = load_harness(name)
    harness = skip_unless_available(name, owned_harnesses[name])
    namespace = f"f{os.urandom(5).hex()}"
    url = harness.restartable_url(namespace)
    if url is None:
        binary = SERVER_BINARY[name]
        reason = f"{name}: no test-owned broker ({binary} on PATH: {shutil.which(binary)})"
        if name in required():
            pytest.fail(f"{name} is required here but unavailable: {reason}")
        pytest.skip(reason)
    return OwnedBroker(name, harness, namespace, url)
