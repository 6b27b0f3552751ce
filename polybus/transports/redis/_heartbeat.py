"""The heartbeat, on a thread of its own: liveness is the process's, not its event loop's.

A consumer is reaped (its messages given to others) once its heartbeat stops. Sent from the
application's event loop, a heartbeat would stop whenever a handler blocks the loop — a
coroutine calling ``time.sleep`` or crunching for longer than ``heartbeat`` seconds — and a
consumer that is merely busy would see its message handled twice. So the heartbeat runs on a
thread with an event loop and a link of its own (the same wire as everything else); only a
process that is gone (or stopped) stops it. What a beat learns (the server's clock, a restart
that emptied the server) is handed to the application's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable

from redis import exceptions as redis_errors

from polybus.transports.redis._errors import ERRORS
from polybus.transports.redis._scripts import Scripts
from polybus.transports.redis._wire import Link, Wire

Beat = tuple[bool, bytes, float]
"""What a heartbeat answers: whether this connection was still registered, the server's epoch
(its run id) and the server's clock minus ours, in ms."""


async def beat(link: Link, scripts: Scripts, connection_id: str, liveness_ms: int) -> Beat:
    """One heartbeat.

    :raises RedisError, OSError: the server could not be reached or refused it.
    """
    asked = time.time() * 1000
    reply = await scripts.call(link, "heartbeat", connection_id, liveness_ms)
    if isinstance(reply, redis_errors.RedisError):
        raise reply
    known, epoch, server_ms = reply
    return bool(known), epoch, int(server_ms) - (asked + time.time() * 1000) / 2


class HeartbeatThread:
    """Beats every ``interval`` seconds on a daemon thread, over a link of its own, and hands
    each result (a ``Beat``, or the exception a beat raised) to ``on_beat`` on ``loop``."""

    def __init__(
        self,
        open_wire: Callable[[], Awaitable[Wire]],
        timeout: float,
        scripts: Scripts,
        connection_id: str,
        liveness_ms: int,
        on_beat: Callable[[Beat | BaseException], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._open_wire = open_wire
        self._timeout = timeout
        self._scripts = scripts
        self._connection_id = connection_id
        self._liveness_ms = liveness_ms
        self._on_beat = on_beat
        self._loop = loop
        self._stop = threading.Event()
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None  # the beats, on the thread's own loop
        self._thread = threading.Thread(
            target=self._run, name=f"polybus-redis-heartbeat-{connection_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # stop() cancelled a beat in flight
            asyncio.run(self._beats())

    async def _beats(self) -> None:
        self._task = asyncio.current_task()
        self._thread_loop = asyncio.get_running_loop()
        link = Link(self._open_wire, self._timeout)
        interval = self._liveness_ms / 3000
        try:
            while not self._stop.is_set():
                await asyncio.sleep(interval)
                if self._stop.is_set():
                    return
                result: Beat | BaseException
                try:
                    result = await beat(link, self._scripts, self._connection_id, self._liveness_ms)
                except ERRORS as exc:
                    result = exc
                try:
                    self._loop.call_soon_threadsafe(self._on_beat, result)
                except RuntimeError:  # the application's loop is closed: nobody to beat for
                    return
        finally:
            with contextlib.suppress(*ERRORS):
                await link.close()

    def stop(self) -> None:
        """Stop beating: the thread's task is cancelled, even in the middle of a beat."""
        self._stop.set()
        loop, task = self._thread_loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # its loop has already ended
                # cancelled, not woken: a beat waiting on a stalled server would hold join()
                # (and the close() that joins it) for the link's whole timeout
                loop.call_soon_threadsafe(task.cancel)

    def join(self) -> None:
        self._thread.join()
