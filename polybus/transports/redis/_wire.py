"""Commands packed by hand and pipelined on a connection of their own.

redis-py's pipeline packs every argument and parses every reply in Python, and a batch must be
answered before the next one goes (what that cost: docs/redis.md, Performance). On a ``Link``
the hot paths (publishing, acking, fetching) write their commands the moment they are packed,
and each sender gets its replies, in order, as they arrive — so Redis works on one batch while
the next is being packed.

Every command the transport sends goes over a ``Link``: scripts, declarations and queries, the
heartbeat, publishing, acking and reading. A link to a real server owns its socket
(``SocketWire``): hiredis parses the bytes as asyncio hands them over, and replies are dispatched
right there. fakeredis has no socket; its wire (``_fake.FakeWire``) has the same interface.
"""

from __future__ import annotations

import asyncio
import ssl
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors

HIGH_WATER = 4 << 20  # bytes written and not yet sent before a sender waits
READ_SIZE = 1 << 20  # bytes read from the socket at once, at most


def command(*args: bytes | str | int) -> bytes:
    """One command in RESP, Redis's wire format: an array of bulk strings."""
    return b"*%d\r\n%s" % (len(args), bulk_strings(*args))


def bulk_strings(*args: bytes | str | int) -> bytes:
    """Arguments in RESP, without the array header (to build templates of commands)."""
    parts = []
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def error_reply(message: str) -> redis_errors.ResponseError:
    """An error reply as redis-py would raise it (the scripts' absence has its own class)."""
    if message.startswith("NOSCRIPT"):
        return redis_errors.NoScriptError(message)
    return redis_errors.ResponseError(message)


ELSEWHERE = ("MOVED ", "ASK ", "CLUSTERDOWN ", "READONLY ")
"""Error replies that mean this server no longer serves these keys (a failover, a resharding)."""


class ServedElsewhere(redis_errors.ConnectionError):
    """The server refused a command because another one serves its keys now: the connection
    is dropped, and what it refused did not run there (send it again, to where they are)."""


def served_elsewhere(reply: Any) -> bool:
    """Whether the reply says the keys are served by another server now: what a cluster's
    node answers after a failover, or a script that touched a key of a slot it lost."""
    if not isinstance(reply, redis_errors.ResponseError):
        return False
    message = str(reply)
    return message.startswith(ELSEWHERE) or "non local key" in message


Replies = asyncio.Future[list[Any]]


class Wire(ABC):
    """One connection: commands written in order, replies handed back in the same order."""

    broken: BaseException | None = None

    @abstractmethod
    async def write(self, commands: Sequence[bytes]) -> Replies:
        """Write now; the future gets the replies (error replies as ``ResponseError``
        instances, not raised)."""

    def write_now(self, commands: Sequence[bytes]) -> Replies | None:
        """``write`` without waiting, when that is possible at this moment; else None."""
        return None

    @abstractmethod
    def close(self, reason: BaseException) -> None:
        """Drop the connection; every command still waiting fails with ``reason``."""

    async def closed(self) -> None:  # noqa: B027 - nothing to wait for, for most wires
        """Wait until what ``close()`` started is done."""


class _Waiting:
    """Senders waiting for replies, oldest first."""

    def __init__(self) -> None:
        self.queue: deque[tuple[Replies, int]] = deque()
        self.partial: list[Any] = []

    def add(self, count: int) -> Replies:
        replies: Replies = asyncio.get_running_loop().create_future()
        self.queue.append((replies, count))
        return replies

    def reply(self, value: Any) -> None:
        partial = self.partial
        partial.append(value)
        replies, count = self.queue[0]
        if len(partial) == count:
            self.queue.popleft()
            self.partial = []
            if not replies.done():
                replies.set_result(partial)

    def fail(self, reason: BaseException) -> None:
        while self.queue:
            replies = self.queue.popleft()[0]
            if not replies.done():
                replies.set_exception(reason)


@dataclass(frozen=True)
class Endpoint:
    """Where a real server is and how to log in to it."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None
    connect_timeout: float


class SocketWire(Wire, asyncio.BufferedProtocol):
    """An asyncio protocol on a TCP (or TLS) connection to Redis, parsing with hiredis. The
    socket is read into one buffer of its own, not into a new bytes object per read."""

    def __init__(self) -> None:
        import hiredis  # the redis extra installs it; checked when the transport connects

        self._parser = hiredis.Reader(replyError=error_reply)
        self._buffer = memoryview(bytearray(READ_SIZE))
        self._waiting = _Waiting()
        self._transport: asyncio.Transport | None = None
        self._can_write: asyncio.Future[None] | None = None

    @classmethod
    async def open(cls, endpoint: Endpoint) -> SocketWire:
        loop = asyncio.get_running_loop()
        try:
            _, wire = await asyncio.wait_for(
                loop.create_connection(cls, endpoint.host, endpoint.port, ssl=endpoint.tls),
                endpoint.connect_timeout,
            )
        except asyncio.TimeoutError:
            raise redis_errors.TimeoutError(
                f"no connection to {endpoint.host}:{endpoint.port} within "
                f"{endpoint.connect_timeout}s"
            ) from None
        hello: list[bytes] = []
        if endpoint.password is not None:
            login = [endpoint.username] if endpoint.username else []
            hello.append(command("AUTH", *login, endpoint.password))
        if endpoint.db:
            hello.append(command("SELECT", endpoint.db))
        if hello:
            for reply in await (await wire.write(hello)):
                if isinstance(reply, redis_errors.ResponseError):  # a refused login or db
                    wire.close(reply)
                    raise reply
        return wire

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.set_write_buffer_limits(high=HIGH_WATER)
        self._transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        parser = self._parser
        parser.feed(self._buffer, 0, nbytes)  # type: ignore[arg-type]  # any buffer; it copies
        waiting = self._waiting
        while (reply := parser.gets()) is not False:
            if served_elsewhere(reply):  # the next command finds where, on a new connection
                self.close(ServedElsewhere(f"the keys are served elsewhere now: {reply}"))
                return
            waiting.reply(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(exc or redis_errors.ConnectionError("Redis closed the connection"))

    def pause_writing(self) -> None:
        self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    async def write(self, commands: Sequence[bytes]) -> Replies:
        if self.broken is not None:
            raise self.broken
        replies = self._send(commands)
        if self._can_write is not None and not self._can_write.done():
            await self._can_write  # the socket is behind: wait for it to drain
        return replies

    def write_now(self, commands: Sequence[bytes]) -> Replies | None:
        behind = self._can_write is not None and not self._can_write.done()
        return None if self.broken is not None or behind else self._send(commands)

    def _send(self, commands: Sequence[bytes]) -> Replies:
        assert self._transport is not None
        replies = self._waiting.add(len(commands))
        self._transport.write(b"".join(commands))
        return replies

    def close(self, reason: BaseException) -> None:
        if self.broken is None:
            self.broken = reason
            self._waiting.fail(reason)
            if self._can_write is not None and not self._can_write.done():
                self._can_write.set_exception(reason)
            if self._transport is not None:
                self._transport.close()


class Link:
    """Pipelined commands on a wire of their own, made again on the next send after a
    failure. A failure fails every command still waiting for its reply (its outcome is
    unknown), and ``timeout`` seconds without a reply counts as one."""

    def __init__(self, open_wire: Callable[[], Awaitable[Wire]], timeout: float) -> None:
        self._open_wire = open_wire
        self._timeout = timeout
        self._wire: Wire | None = None
        self._writing = asyncio.Lock()

    async def call(self, *commands: bytes, timeout: float = 0.0) -> list[Any]:
        """Send the commands and return their replies (an error reply as a ``ResponseError``
        instance, not raised); ``timeout`` adds to the link's own (for blocking commands).
        Refused because another server serves the keys now, they go once more, to it."""
        try:
            return await (await self.send(commands, timeout=timeout))
        except ServedElsewhere:
            return await (await self.send(commands, timeout=timeout))

    async def send(self, commands: Sequence[bytes], *, timeout: float = 0.0) -> Replies:
        """Write the commands now; the future gets their replies. Redis runs the commands of
        successive sends in the order they were sent.

        :raises RedisError, OSError: the connection could not be made or written to.
        """
        async with self._writing:
            wire = self._wire
            if wire is None or wire.broken is not None:
                wire = self._wire = await self._open_wire()
            replies = await wire.write(commands)
        return self._timed(wire, replies, timeout)

    def send_now(self, commands: Sequence[bytes], *, timeout: float = 0.0) -> Replies | None:
        """``send`` without waiting, when the link can write at once; else None (then
        ``send``)."""
        wire = self._wire
        if wire is None or self._writing.locked():
            return None
        replies = wire.write_now(commands)
        return None if replies is None else self._timed(wire, replies, timeout)

    def _timed(self, wire: Wire, replies: Replies, timeout: float) -> Replies:
        deadline = self._timeout + timeout
        expiry = asyncio.get_running_loop().call_later(deadline, self._expire, wire, replies)
        replies.add_done_callback(lambda _: expiry.cancel())
        return replies

    def _expire(self, wire: Wire, replies: Replies) -> None:
        if not replies.done():
            wire.close(redis_errors.TimeoutError("Redis did not reply in time"))

    async def close(self) -> None:
        """Drop the connection; commands still waiting fail with ``ConnectionError``."""
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.close(redis_errors.ConnectionError("the link was closed"))
            await wire.closed()
