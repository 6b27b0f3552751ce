"""Raw commands for the Redis tests, on a bus's own control connection (redis or fakeredis)."""

from __future__ import annotations

from typing import Any


async def raw(bus: Any, *args: bytes | str | int) -> Any:
    """A command sent as it is, on the transport's own control connection (redis or fakeredis)."""
    from polybus.transports.redis._wire import command

    (reply,) = await bus._transport._control.call(command(*args))
    return reply


def stream_key(bus: Any, queue: str, level: int = 0) -> str:
    return str(bus._transport._session.stream_key(queue, level))
