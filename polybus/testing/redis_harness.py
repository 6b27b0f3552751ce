"""The Redis harnesses: the shared server for isolated tests, a test-owned server to restart,
and fakeredis.

Shared server (``$POLYBUS_REDIS_URL``, default ``redis://127.0.0.1:6379/0``): every test gets a
namespace, so its keys live under ``polybus:<namespace>:``; cleanup deletes them with SCAN + DEL.
Nothing else on that server is ever touched (no FLUSHDB, no CONFIG SET, no shutdown).

Test-owned server (fault tests): ``redis-server`` on a free port and a temporary directory with
``appendonly yes`` and ``appendfsync always``; a restart is a SIGKILL and a start on the same
directory and port, so what survives is exactly what the append-only file holds.

Tests use ``heartbeat=2``: a crashed consumer's messages come back about two seconds after its
last heartbeat, and a consumer that is merely slow is never reclaimed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

from polybus.testing.harness import (
    BrokerHarness,
    ClusterHarness,
    OwnedCluster,
    OwnedServer,
    ServerHarness,
    add_namespace,
    free_port,
    missing_client,
)

SHARED_URL = os.environ.get("POLYBUS_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_OPTIONS = "heartbeat=2"


def _with_options(url: str, namespace: str) -> str:
    separator = "&" if "?" in url else "?"
    return add_namespace(f"{url}{separator}{TEST_OPTIONS}", namespace)


def _ping(url: str, timeout: float) -> str | None:
    """None when the Redis server at ``url`` answers PING, else why not."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:
        return f"Redis at {url} does not answer: {exc!r}"
    return None


def delete_keys(url: str, pattern: str) -> int:
    """Delete the keys matching ``pattern`` (SCAN + DEL, never FLUSHDB); return how many."""
    import redis

    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.delete(*batch)
                batch = []
        if batch:
            deleted += client.delete(*batch)
    finally:
        client.close()
    return deleted


class OwnedRedis(OwnedServer):
    """A ``redis-server`` this test session owns, with ``appendonly yes``."""

    def __init__(self, appendfsync: str = "always", options: tuple[str, ...] = ()) -> None:
        """``options``: more of the server's command-line options (``--replicaof``, …)."""
        super().__init__("polybus-redis-")
        self.appendfsync = appendfsync
        self.options = options

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            "redis-server",
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)),
            *("--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", ""),
            *self.options,
        ]

    def unanswered(self) -> str | None:
        return _ping(self.url, 0.5)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP until the block ends: a server that hangs with its connections open."""
        self.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.send_signal(signal.SIGCONT)


CLIENT = ("redis", "redis-py", "redis")  # module, package, extra: see missing_client


class RedisHarness(ServerHarness):
    name = "redis"

    binary = "redis-server"

    def probe(self) -> str | None:
        return missing_client(*CLIENT) or _ping(SHARED_URL, 3.0)

    def url(self, namespace: str) -> str:
        return self.with_namespace(SHARED_URL, namespace)

    def cleanup(self, namespace: str) -> None:
        delete_keys(SHARED_URL, f"polybus:{namespace}:*")

    def new_server(self) -> tuple[OwnedServer, str]:
        server = OwnedRedis()
        return server, server.url

    def with_namespace(self, url: str, namespace: str) -> str:
        return _with_options(url, namespace)


class FakeRedisHarness(BrokerHarness):
    """``fakeredis://``: every test gets its own in-process server (the URL's name)."""

    name = "fakeredis"

    def unavailable(self) -> str | None:
        for module in ("redis", "fakeredis", "lupa"):  # lupa runs fakeredis's Lua
            if missing := missing_client(module, module, "fakeredis"):
                return missing
        return None

    def url(self, namespace: str) -> str:
        return _with_options(f"fakeredis://{namespace}", namespace)

    def cleanup(self, namespace: str) -> None:
        from polybus.transports.redis._fake import forget_fake_server

        forget_fake_server(namespace)


MASTER_NAME = "polybus-test"


class OwnedSentinel(OwnedServer):
    """A Redis Sentinel (``redis-server CONF --sentinel``) watching the test master: the
    master counts as down after one second without an answer."""

    def __init__(self, master_port: int) -> None:
        super().__init__("polybus-sentinel-")
        # written once: the sentinel rewrites it with what it learns, and a restart keeps that
        (self.dir / "sentinel.conf").write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 5000\n"
        )

    def command(self) -> list[str]:
        return ["redis-server", str(self.dir / "sentinel.conf"), "--sentinel"]

    def unanswered(self) -> str | None:
        return _ping(f"redis://127.0.0.1:{self.port}/0", 0.5)

    def healthy_replicas(self, master_port: int) -> set[int]:
        """The ports of the replicas this sentinel knows as following the master, in sync:
        the ones it reconfigures after a failover. It learns of a replica from the master's
        ``INFO``, every 10 s: one it does not know yet would go on following a killed master."""
        healthy = set()
        for replica in self.ask("replicas", MASTER_NAME):
            fields = {key.decode(): value.decode() for key, value in replica.items()}
            if (
                fields["flags"] == "slave"
                and fields["master-link-status"] == "ok"
                and int(fields["master-port"]) == master_port
            ):
                healthy.add(int(fields["port"]))
        return healthy

    def ask(self, *arguments: str) -> Any:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return client.execute_command("SENTINEL", *arguments)  # type: ignore[no-untyped-call]
        finally:
            client.close()


class OwnedRedisSentinel(OwnedCluster):
    """A master, two replicas and three sentinels (quorum 2), each its own process; the
    sentinels promote a replica about a second after the master stops answering, and the
    other replica then follows the new master (so ``wait_replicas=1`` can still be met)."""

    def __init__(self) -> None:
        master = OwnedRedis()
        follow = ("--replicaof", "127.0.0.1", str(master.port))
        self.servers = [master, OwnedRedis(options=follow), OwnedRedis(options=follow)]
        self.sentinels = [OwnedSentinel(master.port) for _ in range(3)]
        super().__init__([*self.servers, *self.sentinels])

    @property
    def url(self) -> str:
        sentinels = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{sentinels}/{MASTER_NAME}/0"

    def master(self) -> int:
        """The node the sentinels name the master now."""
        _host, port = self.sentinels[0].ask("get-master-addr-by-name", MASTER_NAME)
        return next(i for i, node in enumerate(self.servers) if node.port == int(port))

    def start(self) -> None:
        """Start what is down; a server comes back as what the sentinels say it is now — the
        master, or a replica of it (else a former master would come back a master, until a
        sentinel demotes it some seconds later)."""
        if any(server.running for server in self.servers):
            master = self.servers[self.master()]
            for server in self.servers:
                if not server.running:
                    follow = ("--replicaof", "127.0.0.1", str(master.port))
                    server.options = () if server is master else follow
        super().start()

    def unready(self) -> str | None:
        import redis

        try:
            master = self.servers[self.master()]
            client = redis.Redis(port=master.port, socket_timeout=1, socket_connect_timeout=1)
            try:
                replication = client.info("replication")
            finally:
                client.close()
            if replication.get("role") != "master":
                return f"the named master {master.port} is a {replication.get('role')}"
            replicas = [v for k, v in replication.items() if k.startswith("slave")]
            synced = [r for r in replicas if isinstance(r, dict) and r.get("state") == "online"]
            if len(synced) < len(self.servers) - 1:
                return f"the master {master.port} has not every replica in sync: {replication}"
            self.sentinels[0].ask("ckquorum", MASTER_NAME)
            followers = {server.port for server in self.servers if server is not master}
            for sentinel in self.sentinels:
                if missing := followers - sentinel.healthy_replicas(master.port):
                    return f"sentinel {sentinel.port} does not yet see the replicas {missing}"
        except (redis.RedisError, OSError, StopIteration, ValueError) as exc:
            return f"not ready: {exc!r}"
        return None

    def restart(self) -> None:
        """The master killed and started again at once, too soon for the sentinels to fail
        over: a Redis restart, which its append-only file survives."""
        self.kill(self.master())
        self.start()


class RedisSentinelHarness(ClusterHarness):
    """A test-owned Redis master, two replicas and three sentinels; ``redis+sentinel://``
    URLs."""

    name = "redis-sentinel"

    binary = "redis-server"

    client = CLIENT

    def new_cluster(self) -> OwnedCluster:
        return OwnedRedisSentinel()

    def with_namespace(self, url: str, namespace: str) -> str:
        return _with_options(url, namespace)

    def cleanup(self, namespace: str) -> None:
        cluster = self.cluster
        assert isinstance(cluster, OwnedRedisSentinel)
        master = cluster.servers[cluster.master()]
        delete_keys(master.url, f"polybus:{namespace}:*")


class OwnedRedisCluster(OwnedCluster):
    """A Redis Cluster of three masters with two replicas each, nine processes: a replica
    takes over a second after its master stops answering (whatever its lag: the tests kill
    masters mid-stream), and the other replica follows it, so ``wait_replicas=1`` can still be
    met. A node killed and started again rejoins from its ``nodes.conf``; a former master comes
    back a replica."""

    MASTERS = 3
    REPLICAS = 2  # of each master

    def __init__(self) -> None:
        options = (
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0"),
        )
        count = self.MASTERS * (1 + self.REPLICAS)
        # the cluster bus port of its own: by default the port + 10000, which may be taken
        self.servers = [
            OwnedRedis(options=(*options, "--cluster-port", str(free_port()))) for _ in range(count)
        ]
        self._formed = False
        super().__init__(list(self.servers))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.servers)

    def start(self) -> None:
        """Start what is down; the first time, form the cluster (``redis-cli --cluster``)."""
        if not self._formed:
            for server in self.servers:
                server.start()
            subprocess.run(
                [
                    *("redis-cli", "--cluster", "create"),
                    *(f"127.0.0.1:{server.port}" for server in self.servers),
                    *("--cluster-replicas", str(self.REPLICAS), "--cluster-yes"),
                ],
                capture_output=True,
                timeout=60,
                check=True,
            )
            self._formed = True
        super().start()

    def master_of(self, slot: int) -> int:
        """The node serving the slot now, as a running node sees the cluster."""
        for first, last, master, *_ in self._ask("CLUSTER", "SLOTS"):
            if first <= slot <= last:
                return next(i for i, node in enumerate(self.servers) if node.port == master[1])
        raise LookupError(f"no master serves slot {slot}")

    def _ask(self, *command: str) -> Any:
        """A command's reply from the first running node that answers."""
        import redis

        for server in self.servers:
            if server.running:
                client = redis.Redis(port=server.port, socket_timeout=1, socket_connect_timeout=1)
                try:
                    return client.execute_command(*command)  # type: ignore[no-untyped-call]
                except (redis.RedisError, OSError):
                    continue
                finally:
                    client.close()
        raise LookupError("no node of the test-owned cluster answers")

    def unready(self) -> str | None:
        """Why not every node is up and agrees: the cluster state ok, no node flagged as
        failing, three masters each with both replicas in sync."""
        import redis

        try:
            for server in self.servers:
                client = redis.Redis(port=server.port, socket_timeout=1, socket_connect_timeout=1)
                try:
                    info = client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
                    nodes = client.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
                    replication = client.info("replication")
                finally:
                    client.close()
                if b"cluster_state:ok" not in info and "cluster_state:ok" not in str(info):
                    return f"node {server.port} says the cluster is not ok: {info!r}"
                if "fail" in str(nodes):
                    return f"node {server.port} sees a failing node: {nodes!r}"
                online = [
                    value
                    for key, value in replication.items()
                    if key.startswith("slave") and isinstance(value, dict)
                    if value.get("state") == "online"
                ]
                if replication["role"] == "master" and len(online) < self.REPLICAS:
                    return f"master {server.port} has not both replicas in sync: {replication}"
        except (redis.RedisError, OSError) as exc:
            return f"not ready: {exc!r}"
        return None


class RedisClusterHarness(ClusterHarness):
    """A test-owned Redis Cluster (three masters, two replicas each); ``redis+cluster://``
    URLs."""

    name = "redis-cluster"

    binary = "redis-server"

    client = CLIENT

    def new_cluster(self) -> OwnedCluster:
        return OwnedRedisCluster()

    def with_namespace(self, url: str, namespace: str) -> str:
        return _with_options(url, namespace)

    def cleanup(self, namespace: str) -> None:
        from redis.crc import key_slot

        cluster = self.cluster
        assert isinstance(cluster, OwnedRedisCluster)
        prefix = f"{{polybus:{namespace}}}:"  # as the transport names the keys: one slot
        master = cluster.servers[cluster.master_of(key_slot(prefix.encode()))]
        delete_keys(master.url, f"{prefix}*")
