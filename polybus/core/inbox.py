"""Deliveries on their way from a transport's consumer to the code that reads them, on the loop.

An ``asyncio.Queue`` without what an unbounded queue never uses (sizes, putters, task
accounting): putting and getting is paid once per message by every subscription and worker.

Waking readers: a transport delivers a whole batch at once, and a worker has many readers (one
per unit of concurrency). Waking one reader per delivery cost a task switch per message even
when the first reader could take the whole batch without ever waiting (a handler that does not
suspend). So one reader is woken; when it takes a delivery and more are left, another is woken
only if it has not taken them all by the next turn of the loop — that is, if its handler waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from polybus.core.transport import Delivery


class Inbox:
    """A FIFO of deliveries. ``close()`` puts an end marker that stays once reached, so every
    reader, now or later, gets ``None`` after the last delivery."""

    def __init__(self) -> None:
        self._items: deque[Delivery | None] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._woken = 0  # readers woken that have not run yet
        self._spreading = False

    def put(self, delivery: Delivery | None) -> None:
        """Add a delivery (the transport's ``deliver`` callback); wake a reader if none is."""
        self._items.append(delivery)
        if not self._woken:
            self._wake_one()

    def close(self) -> None:
        """Put the end marker and wake every waiting reader to read it."""
        self._items.append(None)
        while self._waiters:
            self._wake_one()

    def ready(self) -> bool:
        """Whether ``get`` would return at once."""
        return bool(self._items)

    async def get(self) -> Delivery | None:
        """The next delivery, waiting for one; ``None`` once the inbox is closed."""
        items = self._items
        while not items:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._woken -= 1  # woken, then cancelled before it could read
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                if items and not self._woken:  # its wake-up goes to the next reader
                    self._wake_one()
                raise
            self._woken -= 1
        delivery = self.get_nowait()
        if items and self._waiters and not self._spreading:
            self._spreading = True
            asyncio.get_running_loop().call_soon(self._spread)
        return delivery

    def get_nowait(self) -> Delivery | None:
        """The next delivery; only when ``ready()``."""
        delivery = self._items[0]
        if delivery is not None:
            self._items.popleft()
        return delivery

    def _wake_one(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._woken += 1
                return

    def _spread(self) -> None:
        """A turn after a reader took a delivery: what it left, its handler is waiting on, so
        wake a reader for each."""
        self._spreading = False
        for _ in range(min(len(self._items), len(self._waiters))):
            self._wake_one()

    def drain(self) -> list[Delivery]:
        """Take every delivery not yet read (to return them to the queue)."""
        items = self._items
        taken = [delivery for delivery in items if delivery is not None]
        ended = None in items
        items.clear()
        if ended:
            items.append(None)
        return taken
