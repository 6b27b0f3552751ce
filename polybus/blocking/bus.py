"""The blocking bus: ``with polybus.connect(url) as bus:``. Thread-safe; its patterns are
derived from the asyncio bus's (``bridge``). What is its own is the lifecycle: a loop thread
per bus, ``close()`` from any thread, and ``run()`` handling SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from polybus.blocking.bridge import Blocking, builds, mirrors, waits
from polybus.blocking.message import Message
from polybus.blocking.patterns import PubSub, Router, Rpc, WorkQueue
from polybus.blocking.portal import Portal
from polybus.core.bus import AsyncBus
from polybus.core.codecs import Codec
from polybus.core.transport import Capabilities, Transport

log = logging.getLogger("polybus")


class _StopNow(BaseException):
    """A second SIGINT/SIGTERM while ``run()`` closes the bus: stop now."""


class Bus(Blocking[AsyncBus]):
    """A connection to a broker and the four patterns on it."""

    url = mirrors[str]("url")
    capabilities = mirrors[Capabilities]("capabilities")
    closed = mirrors[bool]("closed")
    work_queue = builds(AsyncBus.work_queue, WorkQueue)
    pubsub = builds(AsyncBus.pubsub, PubSub)
    router = builds(AsyncBus.router, Router)
    rpc = builds(AsyncBus.rpc, Rpc)
    queue_names = waits(AsyncBus.queue_names)

    def __init__(
        self,
        url: str | None = None,
        *,
        codec: str | Codec = "json",
        transport: Transport | None = None,
    ) -> None:
        portal = Portal()
        try:
            core: AsyncBus = portal.call(self._connect(url, codec, transport))
        except BaseException:
            portal.stop()
            raise
        super().__init__(portal, core)
        self._stopped = threading.Event()
        self._closing = threading.Lock()

    @staticmethod
    async def _connect(
        url: str | None, codec: str | Codec, transport: Transport | None
    ) -> AsyncBus:
        core = AsyncBus(url, codec=codec, transport=transport)
        core._handler_message = Message
        try:
            return await core._connect()
        except BaseException:
            await core.close()
            raise

    def close(self) -> None:
        """Stop workers (running handlers finish), close subscriptions (unreceived messages go
        back), then disconnect and stop the loop thread."""
        with self._closing:  # one close at a time: run() closes too when it returns
            if self._portal.stopped:
                return
            try:
                self._portal.call(self._core.close())
            finally:
                self._stopped.set()
                self._portal.stop()

    def run(self) -> None:
        """Block serving until SIGINT/SIGTERM (or ``close()`` from another thread), then close
        gracefully: running handlers finish. A second signal while closing stops at once,
        without a traceback (handlers still running are left to finish on their threads)."""
        previous: dict[signal.Signals, Any] = {}
        in_main = threading.current_thread() is threading.main_thread()
        signalled = False

        def stop(signum: int, frame: FrameType | None) -> None:
            # takes no lock: the handler runs on the main thread between two of its bytecodes,
            # perhaps while that thread holds the very lock (``Event.set`` here deadlocked a
            # ``wait`` that had its condition's lock)
            nonlocal signalled
            if signalled or self._stopped.is_set():
                raise _StopNow
            signalled = True

        if in_main:
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, stop)
        try:
            while not signalled and not self._stopped.wait(0.2):
                pass
            self.close()
        except _StopNow:
            log.warning("polybus: stopped at once, on a second signal, while closing")
            self._portal.stop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def __enter__(self) -> Bus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(
    url: str | None = None, *, codec: str | Codec = "json", transport: Transport | None = None
) -> Bus:
    """Connect a blocking bus: URL from the argument, else ``$POLYBUS_URL``, else ``memory://``."""
    return Bus(url, codec=codec, transport=transport)
