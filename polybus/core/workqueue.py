"""Work queue: messages wait in a durable queue until one of the workers takes them."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from polybus.core.message import AsyncMessage, BaseMessage
from polybus.core.subscription import ConsumeSpec, Subscription
from polybus.core.transport import Delivery, QueueOptions
from polybus.core.worker import Worker, start_handler_worker

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from polybus.core.bus import AsyncBus, SendOptions

log = logging.getLogger("polybus")

RETRIES_HEADER = "x-polybus-retries"
MessageFactory = Callable[[Delivery], BaseMessage]


class WorkQueue:
    """``send`` to it; ``consume`` it or run a ``worker`` on it. Declared on first use."""

    def __init__(
        self,
        bus: AsyncBus,
        name: str,
        *,
        durable: bool,
        dead_letter: str | Literal[True] | None,
        max_priority: int | None,
        message_ttl: float | None,
    ) -> None:
        self.bus = bus
        self.name = bus.qualify(name)
        if dead_letter is True:  # the default: a dead-letter queue where the transport has them
            dead_letter = f"{name}.dead" if bus.capabilities.dead_letter else None
        self.options = QueueOptions(
            durable=durable,
            dead_letter=bus.qualify(dead_letter) if dead_letter else None,
            message_ttl=message_ttl,
            max_priority=max_priority,
        )

    @property
    def dead_letter_queue(self) -> str | None:
        return self.options.dead_letter

    async def declare(self) -> None:
        await self.bus.declare_queue(self.name, self.options)

    async def send(self, body: Any, **options: Unpack[SendOptions]) -> None:
        """Send one message; returns once the broker has confirmed it. Persistent when the
        queue is durable, unless ``persistent=False``."""
        options.setdefault("persistent", self.options.durable)
        envelope = self.bus.envelope(body, **options)
        await self.declare()
        await self.bus.transport.publish("", self.name, envelope)

    async def send_many(
        self, bodies: Iterable[Any], *, headers: dict[str, Any] | None = None
    ) -> None:
        """Send several messages in order, pipelined; all are encoded before any is sent."""
        persistent = self.options.durable
        items = [
            (self.name, self.bus.envelope(body, headers=headers, persistent=persistent))
            for body in bodies
        ]
        await self.declare()
        await self.bus.transport.publish_many("", items)

    def consume(self, *, prefetch: int = 1, auto_ack: bool = False) -> Subscription:
        """A subscription to the queue: ``async with q.consume(prefetch=10) as sub: ...``."""
        return Subscription(self.bus, self.consume_spec(prefetch, auto_ack))

    def consume_spec(self, prefetch: int, auto_ack: bool = False) -> ConsumeSpec:
        return ConsumeSpec(self.name, self.options, prefetch=max(1, prefetch), auto_ack=auto_ack)

    async def worker(
        self,
        handler: Callable[..., Any],
        *,
        prefetch: int | None = None,
        concurrency: int = 1,
        retries: int = 3,
    ) -> Worker:
        """Run ``handler(message)`` on each message: ack on return; on an exception, send it
        again up to ``retries`` times, then reject it to the dead-letter queue."""
        return await self.start_worker(
            handler,
            lambda delivery: AsyncMessage(delivery, None),
            prefetch=prefetch,
            concurrency=concurrency,
            retries=retries,
        )

    async def start_worker(
        self,
        handler: Callable[..., Any],
        make_message: MessageFactory,
        *,
        prefetch: int | None,
        concurrency: int,
        retries: int,
    ) -> Worker:
        spec = self.consume_spec(prefetch if prefetch is not None else concurrency)

        async def retry_or_dead_letter(delivery: Delivery, exc: Exception) -> None:
            await self._handle_failure(delivery, exc, retries)

        return await start_handler_worker(
            self.bus,
            spec,
            handler,
            make_message,
            concurrency=concurrency,
            on_failure=retry_or_dead_letter,
        )

    async def _handle_failure(self, delivery: Delivery, exc: Exception, retries: int) -> None:
        envelope = delivery.envelope
        done = int(envelope.headers.get(RETRIES_HEADER, 0))
        transport = self.bus.transport
        if done < retries:
            headers = {**envelope.headers, RETRIES_HEADER: done + 1}
            await transport.publish("", self.name, replace(envelope, headers=headers))
            await transport.ack(delivery)
            log.warning(
                "retrying message %s on %s (%d/%d): %r",
                envelope.message_id,
                self.name,
                done + 1,
                retries,
                exc,
            )
            return
        where = self.options.dead_letter or "nowhere (the queue has no dead-letter queue)"
        log.error(
            "message %s on %s failed after %d retries; dead-lettered to %s\n%s",
            envelope.message_id,
            self.name,
            retries,
            where,
            "".join(traceback.format_exception(exc)),
        )
        await transport.nack(delivery, requeue=False)

    async def size(self) -> int:
        """Messages waiting (not counting those delivered and unacked)."""
        await self.declare()
        return await self.bus.transport.queue_size(self.name)

    async def purge(self) -> int:
        await self.declare()
        return await self.bus.transport.purge_queue(self.name)

    async def delete(self) -> None:
        await self.bus.transport.delete_queue(self.name)
        self.bus.forget_queue(self.name)
