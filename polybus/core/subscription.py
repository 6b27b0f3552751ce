"""Consuming one queue: declaring what it needs, buffering deliveries, settling them.

``QueueConsumer`` is the one implementation of the consume lifecycle; the asyncio API's
``Subscription`` (here) and the blocking API's (``polybus.blocking.subscription``) read its
deliveries from different buffers but start, settle and close through it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from polybus.core.arguments import check_timeout
from polybus.core.deadletters import UNDECODABLE, dead_letter
from polybus.core.errors import Closed, PolybusError, ReceiveTimeout
from polybus.core.inbox import Inbox
from polybus.core.message import AsyncMessage
from polybus.core.transport import Delivery, ExchangeKind, QueueOptions

if TYPE_CHECKING:
    from polybus.core.bus import AsyncBus

log = logging.getLogger("polybus")


@dataclass(frozen=True)
class ConsumeSpec:
    """What to consume: a queue (declared with ``options``), its bindings, and how."""

    queue: str
    options: QueueOptions
    bindings: tuple[tuple[str, str], ...] = ()  # (exchange, key)
    prefetch: int = 1
    auto_ack: bool = False
    transient: bool = False  # the queue is deleted when the consumer closes
    exchange: tuple[str, ExchangeKind, bool] | None = None  # (name, kind, durable), declared first
    adopt_queue: bool = False  # the queue exists as it is: declare nothing, check it exists
    adopt_exchange: bool = False  # likewise for the exchange


class QueueConsumer:
    """Starts a transport consumer into ``sink``, settles deliveries, and closes cleanly.

    A delivery the transport could not make sense of (its ``defect`` says why) never reaches
    the sink: it is dead-lettered with the reason, so one malformed message stops nobody."""

    def __init__(self, bus: AsyncBus, spec: ConsumeSpec, sink: Callable[[Delivery], None]) -> None:
        self.bus = bus
        self.spec = spec
        self._sink = sink
        self._tag: str | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.closed = False

    @property
    def queue(self) -> str:
        return self.spec.queue

    async def start(self) -> None:
        spec = self.spec
        broker = self.bus._broker
        if spec.exchange is None:
            pass
        elif spec.adopt_exchange:
            await self.bus._adopt_exchange(spec.exchange[0])
        else:
            await self.bus._declare_exchange(*spec.exchange)
        if spec.adopt_queue:
            await self.bus._adopt_queue(spec.queue)
        else:
            await self.bus._declare_queue(spec.queue, spec.options)
        for exchange, key in spec.bindings:
            await broker.bind(spec.queue, exchange, key)
        self._tag = await broker.consume(
            spec.queue, self._deliver, prefetch=spec.prefetch, auto_ack=spec.auto_ack
        )

    def _deliver(self, delivery: Delivery) -> None:
        if delivery.defect is None:
            self._sink(delivery)
            return
        self.in_background(
            dead_letter(self.bus, self.spec, delivery, UNDECODABLE, detail=delivery.defect)
        )

    def in_background(self, settling: Awaitable[Any]) -> None:
        """Settle without making anyone wait; ``close()`` waits for it."""
        task = asyncio.ensure_future(self._settle_logged(settling))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def settle(self, delivery: Delivery, outcome: str) -> None:
        """Ack (``ack``), requeue (``requeue``) or reject (``reject``) a delivery."""
        if self.spec.auto_ack:
            return
        broker = self.bus._broker
        if outcome == "ack":
            await broker.ack(delivery)
        else:
            await broker.nack(delivery, requeue=outcome == "requeue")

    async def settle_all(self, settlements: Iterable[tuple[Delivery, str]]) -> None:
        """Settle several, in order; what fails is logged (the broker redelivers it)."""
        for delivery, outcome in settlements:
            await self._settle_logged(self.settle(delivery, outcome))

    @staticmethod
    async def _settle_logged(settling: Awaitable[Any]) -> None:
        try:
            await settling
        except PolybusError as exc:
            # the broker will redeliver what it did not see acked: at-least-once, not lost
            log.warning("could not settle deliveries (they will be redelivered): %s", exc)

    async def stop_consuming(self) -> None:
        """Stop new deliveries; what is held can still be settled."""
        if self._tag is not None:
            tag, self._tag = self._tag, None
            try:
                await self.bus._broker.cancel(tag)
            except PolybusError as exc:
                log.warning("could not cancel consumer on %s: %s", self.spec.queue, exc)

    async def close(self, unreceived: list[Delivery]) -> None:
        """Stop, let settlements finish, return ``unreceived`` deliveries to the queue, and
        delete a transient queue."""
        if self.closed:
            return
        self.closed = True
        await self.stop_consuming()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if not self.spec.auto_ack:
            await self.settle_all((delivery, "requeue") for delivery in unreceived)
        if self.spec.transient:
            self.bus._forget_queue(self.spec.queue)
            try:
                await self.bus._broker.delete_queue(self.spec.queue)
            except PolybusError as exc:
                log.warning("could not delete transient queue %s: %s", self.spec.queue, exc)


class Subscription:
    """An asyncio subscription: ``async with`` it, then ``async for msg in sub`` or
    ``await sub.receive(timeout)``. Messages need ``await msg.ack()`` unless auto-acked."""

    def __init__(self, bus: AsyncBus, spec: ConsumeSpec) -> None:
        self._inbox = Inbox()
        self._consumer = QueueConsumer(bus, spec, self._inbox.put)
        self._started = False

    @property
    def queue(self) -> str:
        """The queue this subscription consumes (server-side name, namespace included)."""
        return self._consumer.queue

    async def start(self) -> Subscription:
        """Start consuming now (entering the ``async with`` block or receiving does too)."""
        if not self._started:
            self._started = True
            await self._consumer.start()
            self._consumer.bus._track(self, self.close)
        return self

    async def receive(self, timeout: float | None = None) -> AsyncMessage:
        """The next message; ``ReceiveTimeout`` if none arrives within ``timeout`` seconds."""
        timeout = check_timeout(timeout)
        if not self._started:
            await self.start()
        inbox = self._inbox
        if inbox.ready():
            delivery = inbox.get_nowait()
        elif self._consumer.closed:
            raise Closed(f"the subscription to {self.queue!r} is closed")
        elif timeout is None:
            delivery = await inbox.get()
        else:
            try:
                delivery = await asyncio.wait_for(inbox.get(), timeout)
            except asyncio.TimeoutError:
                raise ReceiveTimeout(f"no message on {self.queue!r} within {timeout}s") from None
        if delivery is None:
            raise Closed(f"the subscription to {self.queue!r} is closed")
        return AsyncMessage(delivery, self._consumer)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> AsyncMessage:
        try:
            return await self.receive()
        except Closed:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        """Stop consuming; unreceived messages return to the queue; a transient queue goes."""
        await self._consumer.close(self._inbox.drain())
        self._inbox.close()  # wakes a receiver waiting on the closed subscription
        self._consumer.bus._untrack(self)

    async def __aenter__(self) -> Subscription:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
