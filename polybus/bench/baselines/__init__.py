"""Raw clients on the same workloads, so the table shows what polybus itself costs.

Each module imports its broker client only when its suite opens, so ``polybus bench`` works
with nothing but the memory transport installed.
"""

from __future__ import annotations

from polybus.bench.model import Suite


def suites_for(scheme: str, url: str, namespace: str) -> list[Suite]:
    """The raw-client suites that speak the URL's protocol (none for memory:// or fakeredis://)."""
    if scheme in ("redis", "rediss"):
        from polybus.bench.baselines.kombu_client import KombuSuite
        from polybus.bench.baselines.redis_streams import RedisStreamsSuite

        return [RedisStreamsSuite(url, namespace), KombuSuite(url, namespace)]
    if scheme in ("amqp", "amqps"):
        from polybus.bench.baselines.aio_pika_client import AioPikaSuite
        from polybus.bench.baselines.kombu_client import KombuSuite
        from polybus.bench.baselines.pika_client import PikaSuite

        return [PikaSuite(url, namespace), AioPikaSuite(url, namespace), KombuSuite(url, namespace)]
    if scheme in ("nats", "tls", "nats+tls"):
        from polybus.bench.baselines.nats_client import NatsDurableRpcSuite, NatsSuite

        return [NatsSuite(url, namespace), NatsDurableRpcSuite(url, namespace)]
    return []


def durability(scheme: str, url: str) -> str:
    """The broker's own durability settings, as printed beside the numbers."""
    if scheme in ("redis", "rediss"):
        from polybus.bench.baselines.redis_streams import durability as redis_durability

        return redis_durability(url)
    if scheme in ("amqp", "amqps"):
        return (
            "durable quorum queues, persistent messages (delivery_mode 2), publisher confirms; "
            "disk sync as the RabbitMQ node is configured"
        )
    if scheme in ("nats", "tls", "nats+tls"):
        return (
            "JetStream file storage (durable queues), acked publishes; disk sync as the server"
            " is configured"
        )
    if scheme == "fakeredis":
        return "in-process fake Redis: nothing reaches a disk"
    if scheme == "memory":
        return "in-process: nothing reaches a disk (durable = survives a simulated restart)"
    return "unknown for this scheme"
