"""The RabbitMQ harness: the shared broker for isolated tests, and a test-owned node to restart.

Shared broker (``$POLYBUS_RABBITMQ_URL``, default ``amqp://guest:guest@127.0.0.1:5672/``): every
test gets a namespace, and what the namespace left behind is deleted in the background, many
namespaces per sweep, because listing queues with ``rabbitmqctl`` takes about a second.

Test-owned node (fault tests): a second ``rabbitmq-server`` with its own node name, ports, config
and directories (owned by the ``rabbitmq`` user, as the server drops to it), started on first use
and stopped at the end of the session. The machine's own node is never stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from polybus.testing.harness import (
    BrokerHarness,
    ClusterHarness,
    OwnedCluster,
    OwnedServer,
    add_namespace,
    free_port,
    missing_client,
)

log = logging.getLogger("polybus.testing")

SHARED_URL = os.environ.get("POLYBUS_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
START_TIMEOUT = 60.0


def _answers(url: str, timeout: float) -> str | None:
    """None when RabbitMQ at ``url`` accepts an AMQP connection, else why not."""
    import pika

    parameters = pika.URLParameters(url)
    parameters.connection_attempts = 1
    parameters.socket_timeout = timeout
    parameters.blocked_connection_timeout = timeout
    try:
        pika.BlockingConnection(parameters).close()
    except Exception as exc:
        return f"RabbitMQ at {url} does not answer: {exc!r}"
    return None


class OwnedNode(OwnedServer):
    """A RabbitMQ node this test session starts, restarts and stops."""

    START_TIMEOUT = START_TIMEOUT

    def __init__(self) -> None:
        super().__init__("polybus-rabbitmq-")
        self.name = f"polybus-{os.getpid()}-{self.port}@localhost"
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        self.dir.chmod(0o755)
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.dir)], check=True)
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(self.dir / "feature_flags"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        return ["rabbitmq-server"]

    def environment(self) -> dict[str, str]:
        return self.env

    def unanswered(self) -> str | None:
        return _answers(self.url, 1.0)

    def kill(self) -> None:
        """SIGKILL the Erlang VM itself (its pid file says which process): the wrapper that
        started it runs it, through ``su``, in a process group of its own."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.dir / "pid").read_text().strip())
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        super().kill()

    def ctl(self, *arguments: str) -> None:
        """``rabbitmqctl -n <this node> ...``, which must succeed."""
        subprocess.run(
            ["rabbitmqctl", "-n", self.name, *arguments],
            env=self.env,
            capture_output=True,
            timeout=120,
            check=True,
        )

    def stop(self) -> None:
        """A clean shutdown (``rabbitmqctl stop``), killed if it does not end."""
        if not self.running:
            return
        with contextlib.suppress(subprocess.SubprocessError):
            self.ctl("stop")
        process = self._process
        assert process is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        super().remove()


class _Sweeper:
    """Deletes the queues and exchanges of finished namespaces, in batches, off the test path."""

    def __init__(self, url: str, node: str | None = None) -> None:
        """``url``: one node's (of a cluster, any); ``node``: its name, for rabbitmqctl
        (None: the machine's own node)."""
        self.url = url
        self.node = node
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._sweeping = threading.Lock()  # held through a sweep, so finish() waits for it
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, namespace: str) -> None:
        with self._lock:
            self._pending.add(namespace)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="polybus-rabbitmq-sweeper", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self.sweep()

    def sweep(self) -> None:
        with self._sweeping:
            with self._lock:
                namespaces, self._pending = self._pending, set()
            if namespaces:
                try:
                    prefixes = tuple(f"{ns}." for ns in namespaces)
                    _delete_namespaces(self.url, self.node, prefixes)
                except Exception as exc:  # a failed sweep must not fail the tests
                    log.warning("could not clean up RabbitMQ namespaces: %r", exc)


def _list(kind: str, node: str | None) -> list[str]:
    where = ["-n", node] if node else []
    done = subprocess.run(
        ["rabbitmqctl", *where, kind, "name", "-q", "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def _delete_namespaces(url: str, node: str | None, prefixes: tuple[str, ...]) -> None:
    import pika

    queues = [name for name in _list("list_queues", node) if name.startswith(prefixes)]
    exchanges = [name for name in _list("list_exchanges", node) if name.startswith(prefixes)]
    if not queues and not exchanges:
        return
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in queues:
            try:
                channel.queue_delete(name)
            except pika.exceptions.ChannelClosedByBroker:  # exclusive to a live connection
                channel = connection.channel()
        for name in exchanges:
            channel.exchange_delete(name)
    finally:
        connection.close()


CLIENT = ("pika", "pika", "rabbitmq")  # module, package, extra: see missing_client


class RabbitMQHarness(BrokerHarness):
    name = "rabbitmq"
    restart_seconds = 10.0  # a node boots in 5 to 8 s here

    def __init__(self) -> None:
        self._probed = False
        self._reason: str | None = None
        self._sweeper = _Sweeper(SHARED_URL)
        self._node: OwnedNode | None = None

    def unavailable(self) -> str | None:
        if not self._probed:
            self._probed = True
            self._reason = missing_client(*CLIENT) or _answers(SHARED_URL, 3.0)
        return self._reason

    def url(self, namespace: str) -> str:
        return add_namespace(SHARED_URL, namespace)

    def cleanup(self, namespace: str) -> None:
        self._sweeper.add(namespace)

    def restartable_url(self, namespace: str) -> str | None:
        if shutil.which("rabbitmq-server") is None:
            return None
        if self._node is None:
            node = OwnedNode()
            node.start()
            self._node = node
        return add_namespace(self._node.url, namespace)

    def restart(self) -> None:
        assert self._node is not None, "call restartable_url() first"
        self._node.restart()

    def shutdown(self) -> None:
        self._sweeper.sweep()
        if self._node is not None:
            node, self._node = self._node, None
            with contextlib.suppress(Exception):
                node.remove()


class OwnedRabbitMQCluster(OwnedCluster):
    """Three RabbitMQ nodes joined in one cluster (the second and third join the first once;
    a node killed and started again rejoins by itself)."""

    nodes: list[OwnedNode]  # type: ignore[assignment]

    def __init__(self, size: int = 3) -> None:
        super().__init__([OwnedNode() for _ in range(size)])
        self._joined = False

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"amqp://guest:guest@{hosts}/"

    def start(self) -> None:
        super().start()
        if not self._joined:
            first = self.nodes[0].name
            for node in self.nodes[1:]:
                node.ctl("stop_app")
                node.ctl("join_cluster", first)
                node.ctl("start_app")
            self._joined = True
            self.wait_ready()

    def restart(self) -> None:
        """A rolling restart: each node killed and started again in turn, once the cluster
        serves again. (With every node killed at once, the quorum queues took longer than
        the suite's 15 s bounds to elect their leaders again on this machine.)"""
        for index in range(len(self.nodes)):
            self.kill(index)
            self.start()

    def unready(self) -> str | None:
        for node in self.nodes:
            if (reason := _answers(node.url, 1.0)) is not None:
                return reason
        return None

    def index_of(self, name: str) -> int:
        """The node of an Erlang node name (``polybus-…@localhost``)."""
        return next(i for i, node in enumerate(self.nodes) if node.name == name)


class RabbitMQClusterHarness(ClusterHarness):
    """A test-owned three-node RabbitMQ cluster; polybus's durable queues are quorum queues,
    replicated on every node."""

    restart_seconds = 10.0  # a node boots in 5 to 8 s here

    name = "rabbitmq-cluster"

    binary = "rabbitmq-server"

    def __init__(self) -> None:
        super().__init__()
        self._sweeper: _Sweeper | None = None

    client = CLIENT

    def new_cluster(self) -> OwnedCluster:
        return OwnedRabbitMQCluster()

    def with_namespace(self, url: str, namespace: str) -> str:
        return add_namespace(url, namespace)

    def cleanup(self, namespace: str) -> None:
        if self._sweeper is None:
            first = self.cluster.nodes[0]
            assert isinstance(first, OwnedNode)
            self._sweeper = _Sweeper(first.url, first.name)
        self._sweeper.add(namespace)

    def shutdown(self) -> None:
        if self._sweeper is not None:
            self._sweeper.sweep()
        super().shutdown()
