"""The heartbeat, on a thread of its own: liveness is the process's, not its event loop's.

A consumer is reaped (its messages given to others) once its heartbeat stops. Sent from the
event loop, a heartbeat would stop whenever a handler blocks the loop — a coroutine calling
``time.sleep`` or crunching for longer than ``heartbeat`` seconds — and a consumer that is
merely busy would see its message handled twice. So the heartbeat runs on a thread with its
own connection; only a process that is gone (or stopped) stops it. What a beat learns (the
server's clock, a restart that emptied the server) is handed to the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from redis import exceptions as redis_errors

from polybus.transports.redis._errors import ERRORS

log = logging.getLogger("polybus.redis")

Beat = tuple[bool, bytes, float]
"""What a heartbeat answers: whether this connection was still registered, the server's epoch
(its run id) and the server's clock minus ours, in ms."""


def beat(client: Any, sha: str, script: str, prefix: str, conn_id: str, ttl_ms: int) -> Beat:
    """One heartbeat with a synchronous client (loading the script if the server lost it).

    :raises RedisError, OSError: the server could not be reached.
    """
    asked = time.time() * 1000
    try:
        known, epoch, server_ms = client.evalsha(sha, 0, prefix, conn_id, ttl_ms)
    except redis_errors.NoScriptError:
        client.script_load(script)
        known, epoch, server_ms = client.evalsha(sha, 0, prefix, conn_id, ttl_ms)
    offset = int(server_ms) - (asked + time.time() * 1000) / 2
    return bool(known), epoch, offset


class HeartbeatThread:
    """Calls ``send()`` every ``interval`` seconds on a daemon thread and hands each result
    (a ``Beat``, or the exception that stopped it) to ``on_beat`` on the loop."""

    def __init__(
        self,
        send: Callable[[], Beat],
        interval: float,
        on_beat: Callable[[Beat | BaseException], None],
        loop: asyncio.AbstractEventLoop,
        name: str,
    ) -> None:
        self._send = send
        self._interval = interval
        self._on_beat = on_beat
        self._loop = loop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            result: Beat | BaseException
            try:
                result = self._send()
            except ERRORS as exc:
                result = exc
            try:
                self._loop.call_soon_threadsafe(self._on_beat, result)
            except RuntimeError:  # the loop is closed: nobody is left to beat for
                return

    def stop(self) -> None:
        """Stop beating (the thread ends within one command's timeout)."""
        self._stop.set()

    def join(self) -> None:
        self._thread.join()
