"""A connection to a Redis server only if it says it is a master (``ROLE``): what Sentinel or a
cluster names the master may, just after a failover, be a former master now a replica."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from redis import exceptions as redis_errors

from polybus.transports.redis._wire import Endpoint, SocketWire, command


async def open_master(login: Endpoint, host: str, port: int) -> SocketWire:
    """A connection to ``host:port`` logged in as ``login`` says, if that server is a master.

    :raises redis.exceptions.RedisError, OSError: it did not answer, or is not a master (the
        message says which).
    """
    wire = await SocketWire.open(replace(login, host=host, port=port))
    try:
        (role,) = await (await wire.write([command("ROLE")]))
    except BaseException:
        wire.close(redis_errors.ConnectionError("no answer to ROLE"))
        raise
    if isinstance(role, list) and role[:1] == [b"master"]:
        return wire
    wire.close(redis_errors.ConnectionError("not the master"))
    raise redis_errors.ConnectionError(f"{host}:{port} is not a master now")


async def one_reply(endpoint: Endpoint, *args: str) -> Any:
    """One command's reply on a connection of its own, closed after (to ask a sentinel or a
    cluster node where the master is); an error reply is raised."""
    wire = await SocketWire.open(endpoint)
    try:
        (reply,) = await (await wire.write([command(*args)]))
    finally:
        wire.close(redis_errors.ConnectionError("asked"))
        await wire.closed()
    if isinstance(reply, BaseException):
        raise reply
    return reply


Ask = Callable[[str, int], Awaitable[tuple[str, int] | None]]
"""Ask a server (a sentinel, a cluster node) where the master is; None: it knows none."""


async def first_master(
    login: Endpoint,
    addresses: Sequence[tuple[str, int]],
    ask: Ask,
    *,
    asked: str,
    knows_none: str,
    failure: str,
) -> SocketWire:
    """A connection to the first master that one of ``addresses``, asked in turn, names and
    that answers as one.

    :raises redis.exceptions.ConnectionError: none did: ``failure``, then what each said
        (``asked``: what each is, ``knows_none``: what it means that one named no master).
    """
    said = []
    for host, port in addresses:
        try:
            address = await ask(host, port)
        except (redis_errors.RedisError, OSError) as exc:
            said.append(f"{asked} {host}:{port} did not answer ({exc!r})")
            continue
        if address is None:
            said.append(f"{asked} {host}:{port} {knows_none}")
            continue
        try:
            return await open_master(login, *address)
        except (redis_errors.RedisError, OSError) as exc:
            said.append(f"the master named by {host}:{port} did not serve ({exc!r})")
    raise redis_errors.ConnectionError(f"{failure}: {'; '.join(said)}")
