"""The NATS harness: the shared server for isolated tests, a test-owned server to restart.

Shared server (``$POLYBUS_NATS_URL``, default ``nats://127.0.0.1:4222``): every test gets a
namespace; cleanup deletes the streams of its queues and its records in the topology bucket,
and nothing else on that server.

Test-owned server (fault tests): ``nats-server -js`` on a free port with its own store
directory; a restart is a SIGKILL and a start on the same directory and port, so what survives
is what JetStream had written.

Tests use ``heartbeat=2``: a crashed consumer's messages come back about two seconds after it
stopped renewing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

from polybus.testing.harness import (
    ClusterHarness,
    OwnedCluster,
    OwnedServer,
    ServerHarness,
    add_namespace,
    free_port,
    missing_client,
)

SHARED_URL = os.environ.get("POLYBUS_NATS_URL", "nats://127.0.0.1:4222")
TEST_OPTIONS = "heartbeat=2"
PREFIX = "polybus"


def _with_options(url: str, namespace: str) -> str:
    separator = "&" if "?" in url else "?"
    return add_namespace(f"{url}{separator}{TEST_OPTIONS}", namespace)


def _answers(host: str, port: int, timeout: float) -> str | None:
    """None when a NATS server at host:port sends its INFO, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if not sock.recv(4096).startswith(b"INFO"):
                return f"{host}:{port} is not a NATS server"
    except OSError as exc:
        return f"NATS at {host}:{port} does not answer: {exc!r}"
    return None


async def _delete_namespace(servers: list[str], namespace: str) -> None:
    """Delete the streams and topology records of ``namespace`` on the server (or cluster)."""
    import nats

    from polybus.transports.nats._names import Names, token

    names = Names(PREFIX)
    nc = await nats.connect(servers=servers, connect_timeout=2, allow_reconnect=False)
    try:
        js = nc.jetstream()
        start = names.stream_prefix(namespace)
        for stream in await js.streams_info():
            name = stream.config.name or ""
            if name.startswith(start):
                with contextlib.suppress(Exception):
                    await js.delete_stream(name)
        ours = tuple(names.record_subject(f"{kind}.{token(namespace + '.')}") for kind in "qx")
        with contextlib.suppress(Exception):
            info = await js.stream_info(names.topology_stream, names.record_subject(">"))
            for subject in info.state.subjects or {}:
                if subject.startswith(ours):
                    await js.purge_stream(names.topology_stream, subject=subject)
    finally:
        await nc.close()


class OwnedNats(OwnedServer):
    """A ``nats-server`` (with JetStream unless told otherwise) this test session owns."""

    def __init__(self, jetstream: bool = True, options: tuple[str, ...] = ()) -> None:
        """``options``: more of the server's command-line options (``--user``, …)."""
        super().__init__("polybus-nats-")
        self.options = ("-js", *options) if jetstream else options

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        where = ["-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.dir / "store")]
        return ["nats-server", *self.options, *where]

    def unanswered(self) -> str | None:
        return _answers("127.0.0.1", self.port, 0.5)


CLIENT = ("nats", "nats-py", "nats")  # module, package, extra: see missing_client


class NatsHarness(ServerHarness):
    name = "nats"

    binary = "nats-server"

    def probe(self) -> str | None:
        if missing := missing_client(*CLIENT):
            return missing
        host_port = SHARED_URL.split("://", 1)[1].rsplit("@", 1)[-1]
        host, _, port = host_port.partition(":")
        return _answers(host, int(port or 4222), 3.0)

    def url(self, namespace: str) -> str:
        return self.with_namespace(SHARED_URL, namespace)

    def cleanup(self, namespace: str) -> None:
        asyncio.run(_delete_namespace([SHARED_URL], namespace))

    def new_server(self) -> tuple[OwnedServer, str]:
        server = OwnedNats()
        return server, server.url

    def with_namespace(self, url: str, namespace: str) -> str:
        return _with_options(url, namespace)


class OwnedNatsNode(OwnedNats):
    """One server of a test-owned NATS cluster: JetStream on, a route port of its own."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.route_port = free_port()
        self.routes: list[int] = []  # the other servers' route ports

    def command(self) -> list[str]:
        routes = ",".join(f"nats://127.0.0.1:{port}" for port in self.routes)
        cluster = f"nats://127.0.0.1:{self.route_port}"
        return [
            *super().command(),
            *("--server_name", self.name, "--cluster_name", "polybus-test"),
            *("--cluster", cluster, "--routes", routes),
        ]


class OwnedNatsCluster(OwnedCluster):
    """Three JetStream servers routed to each other: replicated streams keep serving with one
    of them down."""

    nodes: list[OwnedNatsNode]  # type: ignore[assignment]

    def __init__(self, size: int = 3) -> None:
        nodes = [OwnedNatsNode(f"n{index + 1}") for index in range(size)]
        for node in nodes:
            node.routes = [other.route_port for other in nodes if other is not node]
        super().__init__(list(nodes))

    @property
    def servers(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        return "nats://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def index_of(self, name: str) -> int:
        """The node of a server name (as JetStream names a stream's leader)."""
        return next(i for i, node in enumerate(self.nodes) if node.name == name)

    def unready(self) -> str | None:
        return asyncio.run(_jetstream_unready(self.servers))


async def _jetstream_unready(servers: list[str]) -> str | None:
    """None when JetStream answers on the cluster (its meta leader is elected) and every stream
    has a leader, else why not."""
    import nats

    try:
        nc = await nats.connect(servers=servers, connect_timeout=1, allow_reconnect=False)
    except Exception as exc:
        return f"no server answers: {exc!r}"
    try:
        js = nc.jetstream(timeout=1)
        await js.account_info()
        for stream in await js.streams_info():  # after a restart, each elects its leader again
            if stream.cluster is not None and not stream.cluster.leader:
                return f"stream {stream.config.name} has no leader yet"
    except Exception as exc:
        return f"JetStream does not answer yet: {exc!r}"
    finally:
        await nc.close()
    return None


CLUSTER_TEST_OPTIONS = "replicas=1"
"""The conformance suite's queues on one server each, spread over the cluster (every path
through its routes): a replicated stream takes 0.5-1.5 s to create on this 2-core machine,
which would make the suite take a quarter of an hour. The failover tests ask for R3."""


class NatsClusterHarness(ClusterHarness):
    """A test-owned three-server NATS cluster."""

    name = "nats-cluster"

    binary = "nats-server"

    client = CLIENT

    def new_cluster(self) -> OwnedCluster:
        return OwnedNatsCluster()

    def with_namespace(self, url: str, namespace: str) -> str:
        return _with_options(f"{url}?{CLUSTER_TEST_OPTIONS}", namespace)

    def cleanup(self, namespace: str) -> None:
        cluster = self.cluster
        assert isinstance(cluster, OwnedNatsCluster)
        asyncio.run(_delete_namespace(cluster.servers, namespace))
