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
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from polybus.testing.harness import BrokerHarness, add_namespace, free_port

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


class OwnedNode:
    """A RabbitMQ node this test session starts, restarts and stops."""

    def __init__(self) -> None:
        self.port = free_port()
        self.name = f"polybus-{os.getpid()}-{self.port}@localhost"
        self.dir = Path(tempfile.mkdtemp(prefix="polybus-rabbitmq-"))
        self._process: subprocess.Popen[bytes] | None = None
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

    def start(self) -> None:
        with open(self.dir / "server.out", "ab") as out:
            self._process = subprocess.Popen(
                ["rabbitmq-server"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while (reason := _answers(self.url, 1.0)) is not None:
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"test-owned RabbitMQ node did not start: {reason}; "
                    f"see {self.dir / 'server.out'}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        subprocess.run(
            ["rabbitmqctl", "-n", self.name, "stop"],
            env=self.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class _Sweeper:
    """Deletes the queues and exchanges of finished namespaces, in batches, off the test path."""

    def __init__(self, url: str) -> None:
        self.url = url
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
                    _delete_namespaces(self.url, tuple(f"{ns}." for ns in namespaces))
                except Exception as exc:  # a failed sweep must not fail the tests
                    log.warning("could not clean up RabbitMQ namespaces: %r", exc)


def _list(kind: str) -> list[str]:
    done = subprocess.run(
        ["rabbitmqctl", kind, "name", "-q", "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def _delete_namespaces(url: str, prefixes: tuple[str, ...]) -> None:
    import pika

    queues = [name for name in _list("list_queues") if name.startswith(prefixes)]
    exchanges = [name for name in _list("list_exchanges") if name.startswith(prefixes)]
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


class RabbitMQHarness(BrokerHarness):
    name = "rabbitmq"

    def __init__(self) -> None:
        self._probed = False
        self._reason: str | None = None
        self._sweeper = _Sweeper(SHARED_URL)
        self._node: OwnedNode | None = None

    def unavailable(self) -> str | None:
        if not self._probed:
            self._probed = True
            try:
                import pika  # noqa: F401
            except ImportError:
                self._reason = "pika is not installed: pip install 'polybus[rabbitmq]'"
            else:
                self._reason = _answers(SHARED_URL, 3.0)
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
