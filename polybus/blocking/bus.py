"""The blocking bus: ``with polybus.connect(url) as bus:``. Thread-safe; each call runs the
asyncio core's coroutine on the bus's loop thread and waits for it."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Coroutine
from types import FrameType, TracebackType
from typing import Any, Literal, TypeVar

from polybus.blocking.patterns import PubSub, Router, Rpc, WorkQueue
from polybus.blocking.portal import Portal
from polybus.core.bus import AsyncBus
from polybus.core.codecs import Codec
from polybus.core.transport import Capabilities, Transport

T = TypeVar("T")
log = logging.getLogger("polybus")


class _StopNow(BaseException):
    """A second SIGINT/SIGTERM while ``run()`` closes the bus: stop now."""


class Bus:
    """A connection to a broker and the four patterns on it."""

    def __init__(
        self,
        url: str | None = None,
        *,
        codec: str | Codec = "json",
        transport: Transport | None = None,
    ) -> None:
        self._portal = Portal()
        self._stopped = threading.Event()
        self._closing = threading.Lock()
        self._closed = False
        try:
            self.core: AsyncBus = self._portal.call(self._connect(url, codec, transport))
        except BaseException:
            self._portal.stop()
            raise

    @staticmethod
    async def _connect(
        url: str | None, codec: str | Codec, transport: Transport | None
    ) -> AsyncBus:
        core = AsyncBus(url, codec=codec, transport=transport)
        try:
            return await core.connect()
        except BaseException:
            await core.close()
            raise

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a core coroutine on the bus's loop and wait for its result."""
        return self._portal.call(coroutine)

    def call_soon(self, callback: Any, *args: Any) -> None:
        self._portal.loop.call_soon_threadsafe(callback, *args)

    @property
    def url(self) -> str:
        return self.core.url

    @property
    def capabilities(self) -> Capabilities:
        return self.core.transport.capabilities

    def work_queue(
        self,
        name: str,
        *,
        durable: bool = True,
        dead_letter: str | Literal[True] | None = True,
        max_priority: int | None = None,
        message_ttl: float | None = None,
        declare: bool | None = None,
    ) -> WorkQueue:
        """A queue shared by workers. ``dead_letter=True`` means ``<name>.dead``; ``None``, none.
        ``declare=False``: use the queue as it exists (the options are then not checked)."""
        return WorkQueue(
            self,
            self.core.work_queue(
                name,
                durable=durable,
                dead_letter=dead_letter,
                max_priority=max_priority,
                message_ttl=message_ttl,
                declare=declare,
            ),
        )

    def pubsub(self, name: str, *, durable: bool = True, declare: bool | None = None) -> PubSub:
        """A fanout exchange: every subscriber gets every message. ``durable``: the exchange
        survives a broker restart; ``declare=False``: use it as it exists."""
        return PubSub(self, self.core.pubsub(name, durable=durable, declare=declare))

    def router(
        self,
        name: str,
        kind: Literal["direct", "topic"] = "direct",
        *,
        durable: bool = True,
        declare: bool | None = None,
    ) -> Router:
        """A direct or topic exchange: subscribers choose messages by routing key."""
        return Router(self, self.core.router(name, kind, durable=durable, declare=declare))

    def rpc(self, name: str, *, declare: bool | None = None) -> Rpc:
        """Request/reply over the queue ``name`` (``declare=False``: use it as it exists)."""
        return Rpc(self, self.core.rpc(name, declare=declare))

    def close(self) -> None:
        """Stop workers (running handlers finish), close subscriptions, disconnect, and stop
        the loop thread."""
        with self._closing:  # one close at a time: run() closes too when it returns
            if self._closed:
                return
            self._closed = True
            try:
                self.call(self.core.close())
            finally:
                self._stopped.set()
                self._portal.stop()

    def run(self) -> None:
        """Block serving until SIGINT/SIGTERM (or ``close()`` from another thread), then close
        gracefully: running handlers finish. A second signal while closing stops at once,
        without a traceback (handlers still running are left to finish on their threads)."""
        previous: dict[signal.Signals, Any] = {}
        in_main = threading.current_thread() is threading.main_thread()

        def stop(signum: int, frame: FrameType | None) -> None:
            if self._stopped.is_set():
                raise _StopNow
            self._stopped.set()

        if in_main:
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, stop)
        try:
            while not self._stopped.wait(0.2):
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
