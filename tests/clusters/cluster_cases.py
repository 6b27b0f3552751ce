"""The failover tests' cases: which cluster, which node killed, which URL options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Case:
    """One failover test: a cluster kind, the node killed, the URL options."""

    kind: str
    victim: str  # "connected": the producer's node; "leader": the queue's; "master"
    options: tuple[tuple[str, Any], ...] = ()
    lossless: bool = True  # False: what is lost is measured, not asserted

    @property
    def id(self) -> str:
        return "-".join([self.kind, self.victim, *(f"{k}={v}" for k, v in self.options)])


CASES = (
    Case("nats-cluster", "connected"),
    Case("nats-cluster", "leader"),
    Case("rabbitmq-cluster", "connected"),
    Case("rabbitmq-cluster", "leader"),
    Case("redis-sentinel", "master", (("wait_replicas", 1),)),
    Case("redis-sentinel", "master", (), lossless=False),  # asynchronous replication
    Case("redis-cluster", "master", (("wait_replicas", 1),)),
)
