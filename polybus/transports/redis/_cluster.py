"""Redis Cluster: every key of a namespace in one hash slot, on the master that serves it.

``redis+cluster://[user:password@]n1:6379,n2:6379`` names some of the cluster's nodes. A
publish routes a message to every bound queue in one script, and a script reaches only the keys
of one slot; so the key prefix is a hash tag (``{polybus:<namespace>}:``) and a namespace's
keys all live on one master. A cluster spreads namespaces — applications — over its masters,
not the queues of one namespace.

Every new connection asks the nodes in turn which master serves that slot (``CLUSTER SLOTS``),
and uses it only if it says it is a master. A reply saying the slot is served elsewhere breaks
the connection (``_wire``), so every link follows a failover or a resharding on its next
command, as it follows Sentinel.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from redis.crc import key_slot

from polybus.transports.redis._master import first_master, one_reply
from polybus.transports.redis._wire import Endpoint, SocketWire

CLUSTER_PORT = 6379


def hash_tagged(prefix: str) -> str:
    """The key prefix as a hash tag: ``polybus:ns:`` -> ``{polybus:ns}:``."""
    return f"{{{prefix.removesuffix(':')}}}:"


@dataclass(frozen=True)
class ClusterNodes:
    addresses: tuple[tuple[str, int], ...]
    """The nodes the URL names, asked in turn."""
    prefix: str
    """The hash-tagged key prefix: its slot's master serves every key."""
    login: Endpoint
    """How to log in to every node."""

    @property
    def slot(self) -> int:
        return int(key_slot(self.prefix.encode()))

    async def open_master(self) -> SocketWire:
        """A connection to the master serving the prefix's slot, or ``ConnectionError``
        saying what each node said.

        :raises redis.exceptions.RedisError: no node named a master that answered as one.
        """
        return await first_master(
            self.login,
            self.addresses,
            self._ask,
            asked="node",
            knows_none=f"knows no master for slot {self.slot}",
            failure=f"no master of slot {self.slot} (keys {self.prefix}*) found in the cluster",
        )

    async def _ask(self, host: str, port: int) -> tuple[str, int] | None:
        """The address of the master ``host:port`` says serves the slot, if it knows one."""
        reply = await one_reply(replace(self.login, host=host, port=port), "CLUSTER", "SLOTS")
        for first, last, master, *_replicas in reply:
            if first <= self.slot <= last:
                # an empty or "?" host: the node knows no address of its own; it is where we asked
                named = master[0].decode()
                return (named if named not in ("", "?") else host), int(master[1])
        return None
