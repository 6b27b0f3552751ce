"""Broker harnesses: how the conformance suite reaches each transport's broker.

A harness gives every test an isolated URL (its own namespace on a shared broker), says why the
broker is unavailable when it is, and — for fault tests — owns a broker it may restart: a
test-owned process on its own port and data directory, never the machine's shared service.
Harnesses are registered by name in ``HARNESSES``; ``--polybus-url`` uses ``UrlHarness``.
"""

from __future__ import annotations

import importlib
import os
import socket
from abc import ABC, abstractmethod

from polybus.core.transport import Capabilities
from polybus.core.url import parse_url, transport_class


class BrokerHarness(ABC):
    """One transport's broker, as the suite sees it."""

    name: str = ""

    @abstractmethod
    def unavailable(self) -> str | None:
        """Why the broker cannot be used here (client missing, server down), or None."""

    @abstractmethod
    def url(self, namespace: str) -> str:
        """A URL on the shared broker whose queues and exchanges carry ``namespace``."""

    def cleanup(self, namespace: str) -> None:  # noqa: B027 - optional hook
        """Delete what the namespace left on the shared broker (after each test)."""

    def capabilities(self) -> Capabilities:
        """What the transport can do on this harness's URLs (the transport says, by URL)."""
        url = parse_url(self.url("probe"))
        transport = transport_class(url)
        return transport.capabilities_for(url.configured(transport.url_options))

    def restartable_url(self, namespace: str) -> str | None:
        """A URL on a broker this harness may restart (starting it if needed), or None."""
        return None

    def restart(self) -> None:
        """Restart the broker behind ``restartable_url``; returns once it accepts connections."""
        raise NotImplementedError

    def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Stop test-owned brokers (end of session)."""


def free_port() -> int:
    """A TCP port nothing listens on now, for a test-owned broker or proxy."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def add_namespace(url: str, namespace: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}namespace={namespace}"


class MemoryHarness(BrokerHarness):
    """``memory://``: every test gets its own broker; "restart" is the broker's simulation."""

    name = "memory"

    def __init__(self) -> None:
        self._restartable: str | None = None

    def unavailable(self) -> str | None:
        return None

    def url(self, namespace: str) -> str:
        return f"memory://{namespace}"

    def restartable_url(self, namespace: str) -> str:
        self._restartable = namespace
        return self.url(namespace)

    def restart(self) -> None:
        from polybus.transports.memory import get_broker

        assert self._restartable is not None, "call restartable_url() first"
        get_broker(self._restartable).restart()


class UrlHarness(BrokerHarness):
    """A URL given with ``--polybus-url``: namespaced tests, no broker control."""

    def __init__(self, url: str) -> None:
        self.base = url
        self.name = parse_url(url).scheme

    def unavailable(self) -> str | None:
        return None

    def url(self, namespace: str) -> str:
        if parse_url(self.base).scheme == "memory":
            return f"memory://{namespace}"
        return add_namespace(self.base, namespace)


# name -> "module:Class"; the transports' harnesses live beside their tests' needs
HARNESSES: dict[str, str] = {
    "memory": "polybus.testing.harness:MemoryHarness",
    "fakeredis": "polybus.testing.redis_harness:FakeRedisHarness",
    "redis": "polybus.testing.redis_harness:RedisHarness",
    "rabbitmq": "polybus.testing.rabbitmq_harness:RabbitMQHarness",
}

REQUIRE_ENV = "POLYBUS_REQUIRE"


def load_harness(name: str) -> BrokerHarness | str:
    """The harness, or the reason it cannot be loaded."""
    module_name, _, class_name = HARNESSES[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return f"{name} harness not importable: {exc}"
    harness: BrokerHarness = getattr(module, class_name)()
    return harness


def required() -> set[str]:
    """Transports that must run (``POLYBUS_REQUIRE=redis,rabbitmq``): unavailable fails."""
    return {n.strip() for n in os.environ.get(REQUIRE_ENV, "").split(",") if n.strip()}
