"""Redis behind Sentinel: every new connection asks the sentinels where the master is.

``redis+sentinel://[user:password@]s1:26379,s2:26379/<master name>[/db]`` names the sentinels
and the master they watch. A connection goes to the address the first sentinel that answers
gives, and only if that server says it is the master (``ROLE``): just after a failover a
sentinel may still name the old master, which then comes back as a replica. A link that breaks
asks again on its next command, so every link follows a failover by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from polybus.transports.redis._master import first_master, one_reply
from polybus.transports.redis._wire import Endpoint, SocketWire

SENTINEL_PORT = 26379


@dataclass(frozen=True)
class Sentinels:
    addresses: tuple[tuple[str, int], ...]
    master: str
    """The name the sentinels monitor the master by."""
    login: Endpoint
    """How to log in to the master (its host and port come from the sentinels)."""

    async def open_master(self) -> SocketWire:
        """A connection to the master, or ``ConnectionError`` saying what each sentinel said.

        :raises redis.exceptions.RedisError: no sentinel named a master that answered as one.
        """
        return await first_master(
            self.login,
            self.addresses,
            self._ask,
            asked="sentinel",
            knows_none=f"knows no master named {self.master!r}",
            failure=f"no master {self.master!r} found through Sentinel",
        )

    async def _ask(self, host: str, port: int) -> tuple[str, int] | None:
        sentinel = Endpoint(host, port, 0, None, None, None, self.login.connect_timeout)
        reply = await one_reply(sentinel, "SENTINEL", "get-master-addr-by-name", self.master)
        if not reply:
            return None
        return reply[0].decode(), int(reply[1])
