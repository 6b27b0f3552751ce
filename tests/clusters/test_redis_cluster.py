"""Redis Cluster, beyond the failover test: what a URL may name, no node answering, one slot per
namespace, and a namespace's slot moved to another master while a bus is connected."""

from __future__ import annotations

import os

import pytest
import redis
from redis.crc import key_slot

import polybus
import polybus.aio
from polybus import ConnectionFailed, InvalidURL
from polybus.testing.harness import ClusterHarness, free_port
from polybus.testing.plugin import session_harness
from polybus.testing.redis_harness import OwnedRedisCluster


def test_a_cluster_has_database_0_only():
    with pytest.raises(InvalidURL, match="database 0 only"):
        polybus.connect("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/1")


def test_no_node_answering_is_connection_failed_saying_so():
    url = f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionFailed, match=r"node 127\.0\.0\.1:[0-9]+ did not answer"):
        polybus.connect(url)


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> OwnedRedisCluster:
    harness = session_harness(request.config, "redis-cluster")
    assert isinstance(harness, ClusterHarness)
    owned = harness.cluster
    assert isinstance(owned, OwnedRedisCluster)
    return owned


def move_slot(cluster: OwnedRedisCluster, slot: int) -> int:
    """Move a slot and its keys to another master (what ``redis-cli --cluster reshard`` does
    for each slot it moves); the node it went to."""
    source = cluster.servers[cluster.master_of(slot)]
    clients = {node.port: redis.Redis(port=node.port) for node in cluster.servers}
    try:
        ids = {
            port: client.execute_command("CLUSTER", "MYID").decode()
            for port, client in clients.items()
        }
        masters = [
            port
            for port, client in clients.items()
            if client.info("replication")["role"] == "master"
        ]
        target = next(port for port in masters if port != source.port)
        clients[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source.port])
        clients[source.port].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        while keys := clients[source.port].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            clients[source.port].execute_command(
                "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys
            )
        for port in masters:
            clients[port].execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    finally:
        for client in clients.values():
            client.close()
    return next(i for i, node in enumerate(cluster.servers) if node.port == target)


async def test_every_key_of_a_namespace_is_in_one_slot(cluster):
    namespace = f"k{os.urandom(5).hex()}"
    async with polybus.aio.connect(f"{cluster.url}?namespace={namespace}") as bus:
        await bus.work_queue("jobs").send("job")
        router = bus.router("events", kind="topic")
        async with router.subscribe(["a.*"], name="audit"):
            await router.publish("event", key="a.b")
        slot = key_slot(f"{{polybus:{namespace}}}:".encode())
        master = cluster.servers[cluster.master_of(slot)]
        client = redis.Redis(port=master.port)
        try:
            keys = list(client.scan_iter(match=f"*{namespace}*", count=1000))
            assert keys and {client.cluster("keyslot", key) for key in keys} == {slot}
        finally:
            client.close()


async def test_a_namespace_moved_to_another_master_is_followed(cluster):
    namespace = f"m{os.urandom(5).hex()}"
    async with polybus.aio.connect(f"{cluster.url}?namespace={namespace}") as bus:
        queue = bus.work_queue("jobs")
        await queue.declare()
        async with queue.consume() as sub:
            await queue.send("before")
            first = await sub.receive(timeout=5)
            await first.ack()
            slot = key_slot(f"{{polybus:{namespace}}}:".encode())
            # When the slot moves to another master, while a consumer waits on the old one
            moved_to = move_slot(cluster, slot)
            assert cluster.master_of(slot) == moved_to
            # Then the next send goes there (the old master refused it: sent again, once),
            # and the consumer reads there
            await queue.send("after")
            second = await sub.receive(timeout=10)
            await second.ack()
        assert [first.body, second.body] == ["before", "after"]
        assert await queue.size() == 0
