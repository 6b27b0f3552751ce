"""One consumer: a task that reads its queue into ``deliver``, within its prefetch.

It reads on a connection of its own (a ``Link``), so that waiting blocks nobody else. A queue
without priorities is one stream: ``XREADGROUP … BLOCK`` takes up to the free room in new
entries, or waits for the first to arrive, in one round trip and without polling. A queue with
priorities has a stream per level and is read by the ``FETCH`` script, highest level first,
then waited on with ``XREAD`` past the tails the script reported.

An expired entry is never delivered: ``FETCH`` dead-letters it in the script; a plain read
checks each entry's deadline against the server's clock and has ``SETTLE`` dead-letter it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from redis import exceptions as redis_errors

from polybus.core.errors import ConnectionFailed, NotFound
from polybus.core.tasks import cancelled
from polybus.core.transport import DeliverCallback, Delivery
from polybus.transports.redis._codec import deadline, decode_entry
from polybus.transports.redis._errors import ERRORS, translate
from polybus.transports.redis._session import Session
from polybus.transports.redis._wire import Replies, command

log = logging.getLogger("polybus.redis")

MAX_BACKOFF = 2.0
BLOCK_MS = 2000

Entry = tuple[int, bytes, list[Any]]  # priority level, entry id, fields


def consumer_name(connection_id: str, tag: str) -> str:
    """A consumer's name in Redis: its connection's first, so that reaping finds it."""
    return f"{connection_id}/{tag}"


class Consumer:
    """Delivers one queue to one callback; ``held`` are the ids delivered and not settled."""

    def __init__(
        self,
        session: Session,
        tag: str,
        queue: str,
        levels: int,
        deliver: DeliverCallback,
        prefetch: int,
        auto_ack: bool,
    ) -> None:
        self.session = session
        self.tag = tag
        self.queue = queue
        self.name = consumer_name(session.connection_id, tag)
        self.streams = [session.stream_key(queue, level) for level in range(levels)]
        self.deliver = deliver
        self.prefetch = prefetch
        # refill in batches: fetching one message per ack would be one round trip per message
        self.refill = max(1, prefetch // 2)
        self.auto_ack = auto_ack
        self.held: set[bytes] = set()
        self.stopped = False
        self.link = session.new_link()
        self._room = asyncio.Event()
        self._waiting_for_room = False
        self._next_read: Replies | None = None  # sent the moment room was made (see settled)
        self._fetch_lost = False  # a read failed: its entries may be pending on us, undelivered
        self._task: asyncio.Task[None] | None = None
        self._cancelled = False  # stop() was called: never read again

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def resume(self) -> None:
        """After Redis restarted or reaped this connection: register the consumer again (the
        reading task goes on by itself)."""
        await self.session.run_script("consume", self.session.connection_id, self.queue, self.name)
        if self._task is not None and self._task.done() and not self._cancelled:
            # the reap deleted the queue (exclusive or auto-delete) and the reading task, told
            # NotFound, ended before the queue was declared again: read again
            self.stopped = False
            self.start()

    def settled(self, entry_id: bytes) -> None:
        """A delivery was acked or nacked: there is room for one more. Once there is room for
        a refill, the next read is sent at once, so Redis answers it while the deliveries still
        held are handled (a consumer task woken later would read only after they all were)."""
        self.held.discard(entry_id)
        if self._waiting_for_room and self._room_left() >= self.refill:
            self._waiting_for_room = False
            self._room.set()
            if len(self.streams) == 1:
                self._next_read = self.link.send_now(
                    [self._read_command(self._room_left())], timeout=BLOCK_MS / 1000
                )

    def _room_left(self) -> int:
        return self.prefetch if self.auto_ack else self.prefetch - len(self.held)

    async def _run(self) -> None:
        delay = 0.05
        while not self.stopped:
            room = self._room_left()
            if room < self.refill and self.held:
                self._room.clear()
                self._waiting_for_room = True
                try:
                    await self._room.wait()
                finally:
                    self._waiting_for_room = False
                continue
            try:
                if self._fetch_lost:
                    # the lost reply may have moved entries onto this consumer's pending list:
                    # return every entry it does not hold, or they would stay there for good
                    await self.session.run_script("retire", self.queue, self.name, "0", *self.held)
                    self._fetch_lost = False
                if len(self.streams) == 1:
                    entries = await self._read(room)
                else:
                    entries = await self._fetch(room)
            except NotFound:
                log.info("queue %s was deleted; its consumer %s stops", self.queue, self.tag)
                self.stopped = True
                return
            except ConnectionFailed as exc:
                self._fetch_lost = True
                # the heartbeat says "lost the connection" and "reconnected", once each
                log.debug("consumer on %s: %s; retrying in %.2fs", self.queue, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            delay = 0.05
            for level, entry_id, fields in entries:
                self._deliver(level, entry_id, fields)

    def _read_command(self, room: int) -> bytes:
        return command(
            "XREADGROUP", "GROUP", "g", self.name, "COUNT", room, "BLOCK", BLOCK_MS,
            "STREAMS", self.streams[0], ">",
        )  # fmt: skip

    async def _read(self, room: int) -> list[Entry]:
        """New entries of the single stream, waiting up to ``BLOCK_MS`` for the first."""
        stream = self.streams[0]
        sent, self._next_read = self._next_read, None
        if sent is not None:
            reply = self._checked(await self._reply(sent))
        else:
            reply = await self._call(self._read_command(room), BLOCK_MS / 1000)
        if reply is None:
            return []
        entries: list[Entry] = []
        now: float | None = None
        for entry_id, fields in reply[0][1]:
            expires = deadline(fields)
            if expires is not None:
                now = now or self.session.server_time_ms()
                if expires <= now:
                    await self.session.run_script("settle", self.queue, stream, entry_id, "expire")
                    continue
            entries.append((0, entry_id, fields))
        return entries

    async def _fetch(self, room: int) -> list[Entry]:
        """New entries, highest priority first; when there are none, wait for one."""
        fetch = self.session.scripts.command(
            "fetch", self.queue, self.name, room, "1" if self.auto_ack else "0"
        )
        entries, tails = await self._call(fetch)
        if tails and not entries:
            streams = [*self.streams, *tails]
            await self._call(
                command("XREAD", "COUNT", 1, "BLOCK", BLOCK_MS, "STREAMS", *streams),
                BLOCK_MS / 1000,
            )
        return [(int(level), entry_id, fields) for level, entry_id, fields in entries]

    async def _call(self, request: bytes, blocks: float = 0.0) -> Any:
        """One command on the consumer's link; its error reply raised as a ``PolybusError``."""
        for _ in range(2):
            reply = await self._reply(self.link.call(request, timeout=blocks))
            if not isinstance(reply, redis_errors.NoScriptError):
                return self._checked(reply)
            await self.link.call(*self.session.scripts.load_commands())  # Redis restarted
        raise ConnectionFailed(f"{self._where()}: Redis keeps losing its scripts")

    async def _reply(self, replies: Awaitable[list[Any]]) -> Any:
        """The one reply of a command sent on the link; a lost connection as
        ``ConnectionFailed``."""
        try:
            (reply,) = await replies
        except ERRORS as exc:
            raise ConnectionFailed(f"{self._where()}: {exc!r}") from exc
        return reply

    def _checked(self, reply: Any) -> Any:
        if isinstance(reply, redis_errors.ResponseError):
            raise translate(reply, ConnectionFailed, self._where())
        return reply

    def _where(self) -> str:
        return f"consumer on {self.queue!r} at {self.session.where}"

    def _deliver(self, level: int, entry_id: bytes, fields: list[Any]) -> None:
        envelope, exchange, key, earlier, defect = decode_entry(fields)
        stream = self.streams[level]
        if self.auto_ack:
            if len(self.streams) == 1:  # read without NOACK (FETCH deletes what it reads)
                self.session.queue_ack(stream, entry_id)
        else:
            self.held.add(entry_id)
        delivery = Delivery(
            envelope,
            exchange,
            key,
            earlier > 0,
            earlier + 1,
            (self, stream, entry_id),
            self.tag,
            defect,
        )
        self.deliver(delivery)

    async def stop(self) -> None:
        """Stop delivering and drop the connection. Entries read but not delivered stay
        pending on this consumer: ``retire`` (or reaping) returns them to the queue."""
        self._cancelled = True
        self.stopped = True
        await cancelled(self._task)
        if self._next_read is not None:  # sent, and now nobody will read its reply
            self._next_read.cancel()
            self._next_read = None
        await self.link.close()
