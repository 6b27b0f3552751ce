"""What a transport's publisher and consumers may use of it, and nothing else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from polybus.core.transport import QueueOptions
from polybus.transports.redis._scripts import Scripts
from polybus.transports.redis._wire import Link, command


@dataclass(frozen=True)
class Replicas:
    """How many replicas must have a published message before its send returns (``WAIT``),
    and for how long a send waits for them."""

    count: int
    timeout: float

    def command(self) -> bytes | None:
        """The ``WAIT`` to send after a batch, or None when nothing is waited for."""
        if not self.count:
            return None
        return command("WAIT", self.count, round(self.timeout * 1000))


@dataclass(frozen=True)
class Session:
    """One transport's connection to Redis, as its publisher and consumers see it."""

    connection_id: str
    """Names this connection's consumers (``<connection>/<tag>``) for liveness."""
    scripts: Scripts
    where: str
    """The server, for messages (the URL, its password hidden)."""
    new_link: Callable[[], Link]
    """A connection of one's own, for pipelined commands."""
    run_script: Callable[..., Awaitable[Any]]
    """``await run_script(name, *args)`` on the transport's control link, its error reply
    raised as a ``PolybusError`` (for what must not queue behind a blocked read)."""
    server_time_ms: Callable[[], float]
    """Now on the server's clock, as the last heartbeat measured it."""
    queue_ack: Callable[[str, bytes], None]
    """Ack (``XACK`` + ``XDEL``) an entry with the next round of acks."""
    declared: Callable[[str], QueueOptions | None]
    """The options this transport declared a queue with, if it did."""
    replicas: Replicas

    def stream_key(self, queue: str, level: int) -> str:
        return f"{self.scripts.prefix}s:{queue}:{level}"
