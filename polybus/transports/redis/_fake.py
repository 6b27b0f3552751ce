"""``fakeredis://name``: an in-process Redis for tests, behind the same wire as a real server.

Everything that is fakeredis's own lives here: the process-wide servers (one per name), and the
wire that drives one. fakeredis has no socket, so the wire sends each command to a redis-py
connection of fakeredis's and reads its reply, one after the other. Above the wire, the
transport runs the same code as on a real server.

One quirk is handled here: a blocking command (``XREADGROUP … BLOCK``) that fakeredis is
running goes on after its client disconnects — and a group read then hands entries to a consumer
that is gone, where they stay pending. Redis ends a blocked command when its client goes. So
this wire never sends ``BLOCK``: it sends the command without it, and again every few
milliseconds until it brings something, its time is up, or the wire is closed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis import exceptions as redis_errors

from polybus.core.errors import MissingDependency
from polybus.core.tasks import finished
from polybus.transports.redis._errors import ERRORS
from polybus.transports.redis._wire import Replies, Wire, _Waiting, command

_servers: dict[str, Any] = {}


def fake_server(name: str) -> Any:
    """The process-wide fakeredis server for ``fakeredis://name`` (created on first use)."""
    try:
        import fakeredis
    except ImportError as exc:
        raise MissingDependency(
            "the fakeredis:// transport needs fakeredis; run: pip install 'polybus[fakeredis]'"
        ) from exc
    server = _servers.get(name)
    if server is None:
        server = _servers[name] = fakeredis.FakeServer()
    return server


def forget_fake_server(name: str) -> None:
    """Drop the fakeredis server of ``fakeredis://name`` (its data goes with it)."""
    _servers.pop(name, None)


POLL = 0.005  # seconds between two tries of a blocking command


def _unpacked(packed: bytes) -> list[bytes]:
    """A command's arguments, from RESP (an array of bulk strings)."""
    head, _, rest = packed.partition(b"\r\n")
    args: list[bytes] = []
    for _ in range(int(head[1:])):
        size, _, rest = rest.partition(b"\r\n")
        length = int(size[1:])
        args.append(rest[:length])
        rest = rest[length + 2 :]
    return args


def _without_block(packed: bytes) -> tuple[bytes, float | None]:
    """The command without ``BLOCK <ms>``, and how long it would have blocked (s), if it did."""
    if b"BLOCK" not in packed:
        return packed, None
    args = _unpacked(packed)
    upper = [arg.upper() for arg in args]
    if b"BLOCK" not in upper:
        return packed, None
    at = upper.index(b"BLOCK")
    blocked = int(args[at + 1]) / 1000
    return command(*(args[:at] + args[at + 2 :])), blocked


class FakeWire(Wire):
    """A fakeredis connection: commands sent and answered one at a time, in order, by a task."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._waiting = _Waiting()
        self._outbox: deque[bytes] = deque()
        self._reader: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, server_name: str) -> FakeWire:
        import fakeredis

        client = fakeredis.FakeAsyncRedis(server=fake_server(server_name), protocol=2)
        pool = client.connection_pool
        connection: Any = pool.connection_class(
            **{**pool.connection_kwargs, "socket_timeout": None}
        )
        await connection.connect()
        return cls(connection)

    async def write(self, commands: Sequence[bytes]) -> Replies:
        if self.broken is not None:
            raise self.broken
        replies = self._waiting.add(len(commands))
        self._outbox.extend(commands)
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._run())
        return replies

    async def _run(self) -> None:
        outbox = self._outbox
        try:
            while outbox and self.broken is None:
                self._waiting.reply(await self._answer(outbox.popleft()))
        except ERRORS as exc:
            self.close(exc)
        finally:
            self._reader = None

    async def _answer(self, packed: bytes) -> Any:
        """One command's reply; a blocking one is tried again until it brings something."""
        packed, blocked = _without_block(packed)
        deadline = asyncio.get_running_loop().time() + (blocked or 0)
        while True:
            await self._connection.send_packed_command([packed], check_health=False)
            try:
                reply = await self._connection.read_response()
            except redis_errors.ResponseError as exc:
                return exc
            if reply is not None or blocked is None or self.broken is not None:
                return reply
            if asyncio.get_running_loop().time() >= deadline:
                return None
            await asyncio.sleep(POLL)

    def close(self, reason: BaseException) -> None:
        if self.broken is None:
            self.broken = reason
            self._waiting.fail(reason)
            reader = self._reader
            if reader is not None and reader is not asyncio.current_task():
                reader.cancel()
            self._closing = asyncio.ensure_future(self._connection.disconnect(nowait=True))

    async def closed(self) -> None:
        for task in (self._reader, self._closing):
            await finished(task)
