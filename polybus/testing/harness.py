"""Broker harnesses: how the conformance suite reaches each transport's broker.

A harness gives every test an isolated URL (its own namespace on a shared broker), says why the
broker is unavailable when it is, and — for fault tests — owns a broker it may restart: a
test-owned process on its own port and data directory, never the machine's shared service.
Harnesses are registered by name in ``HARNESSES``; ``--polybus-url`` uses ``UrlHarness``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path

from polybus.core.transport import Capabilities
from polybus.core.url import parse_url, transport_class


class BrokerHarness(ABC):
    """One transport's broker, as the suite sees it."""

    name: str = ""
    apis: tuple[str, ...] = ("aio", "blocking")  # the APIs the conformance suite runs on it
    restart_seconds: float = 2.0
    """How long ``restart()`` may take, at most (a test delays a message past a restart)."""

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


def missing_client(module: str, package: str, extra: str) -> str | None:
    """Why a transport's client library (``module``, from PyPI's ``package``, installed by
    polybus's ``extra``) cannot be used, or None."""
    try:
        importlib.import_module(module)
    except ImportError:
        return f"{package} is not installed: pip install 'polybus[{extra}]'"
    return None


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port nothing listens on now, for a test-owned broker or proxy: below the
    kernel's ephemeral range, so no outgoing connection takes it before the server listens
    (a cluster's nodes connect to each other while the next one starts), and never one this
    process was given before."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    while True:
        port = random.randrange(10000, max(low, 10001))
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


class OwnedServer(ABC):
    """A broker process this test session starts, kills, restarts and removes: its own free
    port and temporary directory (its log in ``server.log``), stopped by its PID."""

    START_TIMEOUT = 10.0

    def __init__(self, prefix: str) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self._process: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def command(self) -> list[str]:
        """The server's command line."""

    @abstractmethod
    def unanswered(self) -> str | None:
        """None when the server serves, else why not (asked until it does)."""

    def environment(self) -> dict[str, str] | None:
        """The server's environment (None: this process's)."""
        return None

    def start(self) -> None:
        self.spawn()
        self.wait_started()

    def spawn(self) -> None:
        """Start the process, without waiting for it to serve (cluster nodes that wait for
        each other start together)."""
        with open(self.dir / "server.log", "ab") as out:
            self._process = subprocess.Popen(
                self.command(),
                env=self.environment(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_started(self) -> None:
        assert self._process is not None, "spawn() first"
        deadline = time.monotonic() + self.START_TIMEOUT
        while (reason := self.unanswered()) is not None:
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "server.log").read_text(errors="replace").splitlines()
                raise RuntimeError(
                    f"test-owned {self.command()[0]} did not start: {reason}; the end of"
                    f" {self.dir}/server.log: {' | '.join(log[-5:])}"
                )
            time.sleep(0.02)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final sync — what the server wrote is all that survives."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # the whole process group: a server may run under a wrapper (su, sh)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def send_signal(self, signum: int) -> None:
        assert self._process is not None, "start() first"
        self._process.send_signal(signum)

    def restart(self) -> None:
        self.kill()
        self.start()

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class ServerHarness(BrokerHarness):
    """A harness on a shared server whose fault tests get a test-owned ``OwnedServer``,
    started on first use and removed at the end of the session."""

    binary = ""  # the server program, which must be on PATH for a test-owned server

    def __init__(self) -> None:
        self._owned: OwnedServer | None = None
        self._owned_url = ""
        self._reason: str | None = None
        self._probed = False

    def unavailable(self) -> str | None:
        if not self._probed:  # asked once: a probe of a server that is down takes seconds
            self._probed = True
            self._reason = self.probe()
        return self._reason

    @abstractmethod
    def probe(self) -> str | None:
        """Why the shared server cannot be used (client missing, server down), or None."""

    @abstractmethod
    def new_server(self) -> tuple[OwnedServer, str]:
        """A test-owned server, not started yet, and its URL."""

    @abstractmethod
    def with_namespace(self, url: str, namespace: str) -> str:
        """``url`` with the test options and ``namespace``."""

    def restartable_url(self, namespace: str) -> str | None:
        if shutil.which(self.binary) is None:
            return None
        if self._owned is None:
            owned, self._owned_url = self.new_server()
            owned.start()
            self._owned = owned
        return self.with_namespace(self._owned_url, namespace)

    def restart(self) -> None:
        assert self._owned is not None, "call restartable_url() first"
        self._owned.restart()

    def shutdown(self) -> None:
        if self._owned is not None:
            owned, self._owned = self._owned, None
            with contextlib.suppress(Exception):
                owned.remove()


class OwnedCluster(ABC):
    """The nodes of one broker cluster this test session owns: started together, one killed
    and started again mid-stream by the failover tests, removed at the end."""

    START_TIMEOUT = 60.0

    def __init__(self, nodes: list[OwnedServer]) -> None:
        self.nodes = nodes

    @property
    @abstractmethod
    def url(self) -> str:
        """A URL naming every node."""

    @abstractmethod
    def unready(self) -> str | None:
        """None when the cluster serves (its nodes joined, a leader elected), else why not."""

    def start(self) -> None:
        """Start the nodes that are not running, together (a node restarted after the others
        went down waits for them), and wait until the cluster serves."""
        stopped = [node for node in self.nodes if not node.running]
        for node in stopped:
            node.spawn()
        for node in stopped:
            node.wait_started()
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.START_TIMEOUT
        while (reason := self.unready()) is not None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"test-owned cluster not ready: {reason}")
            time.sleep(0.1)

    def kill(self, index: int) -> None:
        """SIGKILL one node (the rest go on without it)."""
        self.nodes[index].kill()

    def restart(self) -> None:
        """Every node killed, then all started again (what survives is what they wrote)."""
        for node in self.nodes:
            node.kill()
        self.start()

    def remove(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.remove()


class ClusterHarness(BrokerHarness):
    """A harness on a test-owned cluster, started on first use and removed at the end of the
    session; the conformance suite runs on it (on the asyncio API only: the blocking API is
    a bridge over the same transport, which a cluster does not change) and the failover
    tests kill its nodes."""

    binary = ""  # the server program, which must be on PATH
    client = ("", "", "")  # the transport's client library, as ``missing_client`` takes it
    apis = ("aio",)

    def __init__(self) -> None:
        self._cluster: OwnedCluster | None = None
        self._reason: str | None = None
        self._tried = False

    @abstractmethod
    def new_cluster(self) -> OwnedCluster:
        """The cluster, not started yet."""

    @abstractmethod
    def with_namespace(self, url: str, namespace: str) -> str:
        """``url`` with the test options and ``namespace``."""

    def unavailable(self) -> str | None:
        if not self._tried:  # one start per session: a cluster takes seconds to form
            self._tried = True
            self._reason = missing_client(*self.client)
            if self._reason is None and shutil.which(self.binary) is None:
                self._reason = f"{self.binary} is not on PATH"
            if self._reason is None:
                cluster = self.new_cluster()
                try:
                    cluster.start()
                except Exception as exc:
                    cluster.remove()
                    self._reason = f"the test-owned cluster did not start: {exc}"
                else:
                    self._cluster = cluster
        return self._reason

    @property
    def cluster(self) -> OwnedCluster:
        assert self._cluster is not None, "call unavailable() first"
        return self._cluster

    def url(self, namespace: str) -> str:
        return self.with_namespace(self.cluster.url, namespace)

    def restartable_url(self, namespace: str) -> str | None:
        return None if self.unavailable() else self.url(namespace)

    def restart(self) -> None:
        self.cluster.restart()

    def shutdown(self) -> None:
        if self._cluster is not None:
            cluster, self._cluster = self._cluster, None
            cluster.remove()


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
    "nats": "polybus.testing.nats_harness:NatsHarness",
    "nats-cluster": "polybus.testing.nats_harness:NatsClusterHarness",
    "rabbitmq-cluster": "polybus.testing.rabbitmq_harness:RabbitMQClusterHarness",
    "redis-sentinel": "polybus.testing.redis_harness:RedisSentinelHarness",
    "redis-cluster": "polybus.testing.redis_harness:RedisClusterHarness",
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
