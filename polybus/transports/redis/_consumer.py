"""One consumer: a task that reads its queue's streams into ``deliver``, within its prefetch.

It fetches with the ``FETCH`` script (highest priority first, expired entries dead-lettered on
the way) and, when the queue is empty, blocks on ``XREAD`` until a stream grows past the tail the
script reported, so an idle consumer costs one blocked connection and no polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from redis import exceptions as redis_errors

from polybus.core.errors import ConnectionFailed, NotFound
from polybus.core.transport import DeliverCallback, Delivery
from polybus.transports.redis._codec import decode_entry

if TYPE_CHECKING:
    from polybus.transports.redis.transport import RedisTransport

log = logging.getLogger("polybus.redis")

MAX_BACKOFF = 2.0
BLOCK_MS = 2000
STUCK = 5.0  # seconds past which a reply that never came is given up on


class Consumer:
    """Delivers one queue to one callback; ``held`` are the ids delivered and not settled."""

    def __init__(
        self,
        transport: RedisTransport,
        tag: str,
        queue: str,
        levels: int,
        deliver: DeliverCallback,
        prefetch: int,
        auto_ack: bool,
    ) -> None:
        self.transport = transport
        self.tag = tag
        self.queue = queue
        self.name = f"{transport.conn_id}/{tag}"
        self.streams = [transport.stream_key(queue, level) for level in range(levels)]
        self.deliver = deliver
        self.prefetch = prefetch
        # refill in batches: fetching one message per ack would be one round trip per message
        self.refill = max(1, prefetch // 2)
        self.auto_ack = auto_ack
        self.held: set[bytes] = set()
        self.stopped = False
        self._room = asyncio.Event()
        self._idle = False  # waiting for entries or for room: safe to cancel
        self._fetch_lost = False  # a fetch failed: its entries may be pending on us, undelivered
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def settled(self, entry_id: bytes) -> None:
        """A delivery was acked or nacked: there is room for one more."""
        self.held.discard(entry_id)
        if self._room_left() >= self.refill:
            self._room.set()

    def _room_left(self) -> int:
        return self.prefetch if self.auto_ack else self.prefetch - len(self.held)

    async def _run(self) -> None:
        delay = 0.05
        transport = self.transport
        noack = "1" if self.auto_ack else "0"
        while not self.stopped:
            room = self._room_left()
            if room < self.refill and self.held:
                self._room.clear()
                self._idle = True
                try:
                    await self._room.wait()
                finally:
                    self._idle = False
                continue
            try:
                if self._fetch_lost:
                    # the lost reply may have moved entries onto this consumer's pending list:
                    # return every entry it does not hold, or they would stay there for good
                    await transport.eval("retire", self.queue, self.name, *self.held)
                    self._fetch_lost = False
                entries, tails = await transport.eval("fetch", self.queue, self.name, room, noack)
            except NotFound:
                log.info("queue %s was deleted; its consumer %s stops", self.queue, self.tag)
                self.stopped = True
                return
            except ConnectionFailed as exc:
                self._fetch_lost = True
                log.warning("consumer on %s: %s; retrying in %.2fs", self.queue, exc, delay)
                self._idle = True
                try:
                    await asyncio.sleep(delay)
                finally:
                    self._idle = False
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            delay = 0.05
            if self.stopped:
                return  # what was just fetched is requeued by the retire script
            for level, entry_id, fields in entries:
                self._deliver(int(level), entry_id, fields)
            if tails:
                await self._wait(tails)

    def _deliver(self, level: int, entry_id: bytes, fields: list[Any]) -> None:
        envelope, exchange, key, earlier = decode_entry(fields)
        if not self.auto_ack:
            self.held.add(entry_id)
        delivery = Delivery(
            envelope,
            exchange,
            key,
            earlier > 0,
            earlier + 1,
            (self, self.streams[level], entry_id),
            self.tag,
        )
        self.deliver(delivery)

    async def _wait(self, tails: list[bytes]) -> None:
        """Block until one of the queue's streams has an entry past its tail (or a timeout)."""
        self._idle = True
        try:
            await asyncio.wait_for(
                self.transport.client.xread(
                    dict(zip(self.streams, tails, strict=True)), count=1, block=BLOCK_MS
                ),
                BLOCK_MS / 1000 + STUCK,
            )
        except (redis_errors.RedisError, OSError, asyncio.TimeoutError) as exc:
            log.debug("consumer on %s: wait interrupted: %r", self.queue, exc)
            await asyncio.sleep(0.1)
        finally:
            self._idle = False

    async def stop(self, *, hard: bool = False) -> None:
        """Stop delivering. A fetch in flight is let finish (unless ``hard``), so that what it
        took is known to Redis as pending and can be requeued."""
        self.stopped = True
        task = self._task
        if task is None or task.done():
            return
        if hard or self._idle:
            task.cancel()
        self._room.set()
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await asyncio.wait_for(asyncio.shield(task), STUCK)
            except asyncio.TimeoutError:
                log.warning("consumer on %s did not stop within %ss; cancelled", self.queue, STUCK)
                task.cancel()
                await task
