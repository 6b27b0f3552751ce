"""Redis behind Sentinel, beyond the failover test: what a URL must name, an unreachable
Sentinel, and ``wait_replicas`` refusing a send that the replicas did not get in time."""

from __future__ import annotations

import os
import signal

import pytest

import polybus
import polybus.aio
from polybus import ConnectionFailed, InvalidURL, PublishFailed
from polybus.testing.harness import ClusterHarness, free_port
from polybus.testing.plugin import session_harness
from polybus.testing.redis_harness import OwnedRedisSentinel


def test_a_sentinel_url_names_the_master():
    with pytest.raises(InvalidURL, match="name the master the sentinels watch"):
        polybus.connect("redis+sentinel://127.0.0.1:26379")


def test_redis_urls_of_several_hosts_point_to_sentinel():
    with pytest.raises(InvalidURL, match=r"takes one host, not 2 .*redis\+sentinel://"):
        polybus.connect("redis://h1:6379,h2:6379/0")


def test_no_sentinel_answering_is_connection_failed_saying_so():
    url = f"redis+sentinel://127.0.0.1:{free_port()},127.0.0.1:{free_port()}/master/0"
    with pytest.raises(ConnectionFailed, match=r"sentinel 127\.0\.0\.1:[0-9]+ did not answer"):
        polybus.connect(url)


async def test_a_send_the_replicas_did_not_get_in_time_raises(request):
    harness = session_harness(request.config, "redis-sentinel")
    assert isinstance(harness, ClusterHarness)
    cluster = harness.cluster
    assert isinstance(cluster, OwnedRedisSentinel)
    namespace = f"w{os.urandom(5).hex()}"
    url = f"{cluster.url}?namespace={namespace}&wait_replicas=2&wait_timeout=0.5"
    master = cluster.master()
    replica = next(node for i, node in enumerate(cluster.servers) if i != master)
    try:
        async with polybus.aio.connect(url) as bus:
            queue = bus.work_queue("replicated")
            await queue.send("on every replica")
            # When a replica stops answering
            replica.send_signal(signal.SIGSTOP)
            try:
                with pytest.raises(PublishFailed, match="1 of the 2 replicas asked for"):
                    await queue.send("on one replica only")
            finally:
                replica.send_signal(signal.SIGCONT)
            # Then the master kept it: raising says the outcome is unknown, not that it is lost
            assert await queue.size() == 2
    finally:
        harness.cleanup(namespace)
