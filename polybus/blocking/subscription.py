"""The blocking subscription: what truly differs from the asyncio one.

Deliveries go from the transport straight into a thread-safe queue that the caller's thread
reads, and settlements go back to the loop in batches — one loop wake-up for all the acks made
meanwhile — so no message costs a cross-thread round trip. Starting and closing go through the
same ``QueueConsumer`` as the asyncio subscription.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Iterator
from types import TracebackType

from polybus.blocking.message import Message
from polybus.blocking.portal import Portal
from polybus.core.arguments import check_timeout
from polybus.core.bus import AsyncBus
from polybus.core.errors import Closed, ReceiveTimeout
from polybus.core.subscription import ConsumeSpec, QueueConsumer
from polybus.core.transport import Delivery


class Subscription:
    """``with q.consume() as sub: for msg in sub: ...`` or ``sub.receive(timeout)``."""

    def __init__(self, portal: Portal, bus: AsyncBus, spec: ConsumeSpec) -> None:
        self._portal = portal
        self._buffer: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self._consumer = QueueConsumer(bus, spec, self._buffer.put)
        self._settlements: deque[tuple[Delivery, str]] = deque()
        self._flush_scheduled = False
        self._started = False

    @property
    def queue(self) -> str:
        """The queue this subscription consumes (server-side name, namespace included)."""
        return self._consumer.queue

    def start(self) -> Subscription:
        """Start consuming now (entering the ``with`` block or receiving does too)."""
        if not self._started:
            self._started = True
            self._portal.call(self._consumer.start())
            self._consumer.bus._track(self, self._close)
        return self

    def receive(self, timeout: float | None = None) -> Message:
        """The next message; ``ReceiveTimeout`` if none arrives within ``timeout`` seconds."""
        timeout = check_timeout(timeout)
        self.start()
        try:
            delivery = self._buffer.get(timeout=timeout)
        except queue.Empty:
            raise ReceiveTimeout(f"no message on {self.queue!r} within {timeout}s") from None
        if delivery is None:
            self._buffer.put(None)
            raise Closed(f"the subscription to {self.queue!r} is closed")
        return Message(delivery, self)

    def __iter__(self) -> Iterator[Message]:
        while True:
            try:
                yield self.receive()
            except Closed:
                return

    def _settle_soon(self, delivery: Delivery, outcome: str) -> None:
        """Queue a settlement from any thread; one loop wake-up serves a whole batch."""
        if self._consumer.closed:
            raise Closed(
                f"the subscription to {self.queue!r} is closed; the broker redelivers what it held"
            )
        self._settlements.append((delivery, outcome))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._portal.loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        """On the loop: settle everything queued meanwhile, in order."""
        self._flush_scheduled = False
        settlements = self._settlements
        batch = [settlements.popleft() for _ in range(len(settlements))]
        self._consumer.in_background(self._consumer.settle_all(batch))

    async def _close(self) -> None:
        self._flush()
        unreceived: list[Delivery] = []
        while True:
            try:
                item = self._buffer.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                unreceived.append(item)
        await self._consumer.close(unreceived)
        self._buffer.put(None)
        self._consumer.bus._untrack(self)

    def close(self) -> None:
        """Stop consuming; unreceived messages return to the queue; a transient queue goes."""
        if self._started and not self._consumer.closed:
            self._portal.call(self._close())

    def __enter__(self) -> Subscription:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
