"""Keeping held messages alive, on a thread of its own: liveness is the process's, not its
event loop's.

JetStream gives a message to another consumer once its ack wait passes unacked. A live
consumer renews it (``+WPI``, work in progress) for every message it holds, every third of
the ack wait. Sent from the application's event loop, the renewals would stop whenever a
handler blocks the loop — a coroutine calling ``time.sleep`` or crunching for longer than the
ack wait — and a message still being handled would be handled twice. So they are sent from a
daemon thread with an event loop and a NATS connection of its own: only a process that is gone
(or stopped) stops them, and its messages then go to other consumers after one ack wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Awaitable, Callable, Iterable

from nats.aio.client import Client

from polybus.transports.nats._connection import disconnect
from polybus.transports.nats._errors import ERRORS

log = logging.getLogger("polybus.nats")

IN_PROGRESS = b"+WPI"


class KeepAlive:
    """Every ``interval()`` seconds, renews the messages ``held()`` names (their reply
    subjects), over a connection ``connect()`` opens on the thread's own loop."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Client]],
        held: Callable[[], Iterable[str]],
        interval: Callable[[], float],
    ) -> None:
        self._connect = connect
        self._held = held
        self._interval = interval
        self._thread = threading.Thread(target=self._run, name="polybus-nats-alive", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing; the thread closes its connection and ends by itself."""
        self._stopping.set()
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                loop.call_soon_threadsafe(wake.set)

    def _run(self) -> None:
        asyncio.run(self._renew())

    async def _renew(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        nc: Client | None = None
        try:
            while not self._stopping.is_set():
                try:
                    if nc is None or nc.is_closed:  # else nats-py reconnects it by itself
                        nc = await self._connect()
                    if nc.is_connected:
                        for reply in self._snapshot():
                            await nc.publish(reply, IN_PROGRESS)
                        await nc.flush(timeout=math.ceil(self._interval()))
                except ERRORS as exc:
                    log.debug("could not renew held messages: %r", exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval())
        finally:
            if nc is not None:
                await disconnect(nc)

    def _snapshot(self) -> list[str]:
        """The held messages now (the application's loop changes them meanwhile)."""
        for _ in range(10):
            with contextlib.suppress(RuntimeError):  # changed while being copied: again
                return list(self._held())
        return []
