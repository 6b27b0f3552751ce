"""Fixtures for the failover tests: each cluster kind's test-owned cluster (the one the
conformance suite runs on, started once per session), a namespace on it, and how to find the
node a connection is on and the node that leads a queue."""

from __future__ import annotations

import asyncio
import os
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_cases import Case

from polybus.testing.harness import ClusterHarness
from polybus.testing.plugin import session_harness
from polybus.testing.rabbitmq_harness import OwnedRabbitMQCluster
from polybus.testing.redis_harness import OwnedRedisCluster, OwnedRedisSentinel


class Cluster(ABC):
    """One cluster kind, as the failover tests see it."""

    def __init__(self, harness: ClusterHarness, namespace: str, case: Case) -> None:
        self.harness = harness
        self.name = harness.name
        self.namespace = namespace
        self.case = case

    options: dict[str, Any] = {}  # the failover tests' URL options for this kind

    def url(self, **options: Any) -> str:
        given = {**self.options, **dict(self.case.options), **options}
        query = "&".join(f"{key}={value}" for key, value in given.items())
        return f"{self.harness.cluster.url}?{query}&namespace={self.namespace}"

    async def victim(self, bus: Any, queue: str) -> int:
        """The node this case kills."""
        if self.case.victim == "connected":
            return self.connected_node(bus)
        return await self.leader_node(bus, queue)

    @abstractmethod
    def connected_node(self, bus: Any) -> int:
        """The node a bus's connection is on now."""

    @abstractmethod
    async def leader_node(self, bus: Any, queue: str) -> int:
        """The node that leads a queue's replicas (Redis: the master)."""

    def kill(self, node: int) -> None:
        self.harness.cluster.kill(node)


class NatsCluster(Cluster):
    options = {"heartbeat": 2, "replicas": 3}  # every queue on all three servers

    def connected_node(self, bus: Any) -> int:
        port = bus._transport._nc.connected_url.port
        return next(i for i, node in enumerate(self.harness.cluster.nodes) if node.port == port)

    async def leader_node(self, bus: Any, queue: str) -> int:
        transport = bus._transport
        stream = transport._names.stream(bus._qualify(queue), 0)
        info = await transport._js.stream_info(stream)
        index: int = self.harness.cluster.index_of(info.cluster.leader)  # type: ignore[attr-defined]
        return index


class RabbitMQCluster(Cluster):
    # durable queues are quorum queues, on every node (quorum_size is RabbitMQ's default)

    def connected_node(self, bus: Any) -> int:
        port = bus._transport._connection.params.port
        return next(i for i, node in enumerate(self.harness.cluster.nodes) if node.port == port)

    async def leader_node(self, bus: Any, queue: str) -> int:
        cluster = self.harness.cluster
        assert isinstance(cluster, OwnedRabbitMQCluster)
        command = ["rabbitmqctl", "-n", cluster.nodes[0].name, "list_queues", "name", "leader"]
        listed = await asyncio.to_thread(
            subprocess.run,
            [*command, "-q", "--no-table-headers"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        name = bus._qualify(queue)
        leader = next(
            line.split()[1] for line in listed.stdout.splitlines() if line.split()[:1] == [name]
        )
        return cluster.index_of(leader)


class RedisSentinel(Cluster):
    options = {"heartbeat": 2}

    def _master(self) -> int:
        cluster = self.harness.cluster
        assert isinstance(cluster, OwnedRedisSentinel)
        return cluster.master()

    def connected_node(self, bus: Any) -> int:
        return self._master()  # every connection is to the master

    async def leader_node(self, bus: Any, queue: str) -> int:
        return await asyncio.to_thread(self._master)


class RedisCluster(Cluster):
    options = {"heartbeat": 2}

    def _master(self, bus: Any) -> int:
        cluster = self.harness.cluster
        assert isinstance(cluster, OwnedRedisCluster)
        return cluster.master_of(bus._transport._endpoint.slot)

    def connected_node(self, bus: Any) -> int:
        return self._master(bus)  # every connection is to the master of the namespace's slot

    async def leader_node(self, bus: Any, queue: str) -> int:
        return await asyncio.to_thread(self._master, bus)


CLUSTERS = {
    "nats-cluster": NatsCluster,
    "rabbitmq-cluster": RabbitMQCluster,
    "redis-sentinel": RedisSentinel,
    "redis-cluster": RedisCluster,
}


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The cluster of the test's ``Case`` (parametrized indirectly)."""
    case: Case = request.param
    harness = session_harness(request.config, case.kind)
    assert isinstance(harness, ClusterHarness)
    namespace = f"c{os.urandom(5).hex()}"
    yield CLUSTERS[case.kind](harness, namespace, case)
    harness.cluster.start()  # whatever a test killed, back before the next one
    harness.cleanup(namespace)
