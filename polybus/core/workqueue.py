"""Work queue: messages wait in a durable queue until one of the workers takes them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from polybus.core.arguments import check_bool, check_int, check_prefetch, check_ttl
from polybus.core.deadletters import (
    RETRIES_EXHAUSTED,
    Outcome,
    dead_letter,
    is_dead_letter_queue,
)
from polybus.core.headers import RETRIES
from polybus.core.limits import MAX_NAME, MAX_PRIORITY
from polybus.core.message import AsyncMessage, BaseMessage
from polybus.core.names import check_name, derived_name
from polybus.core.subscription import ConsumeSpec, Subscription
from polybus.core.transport import Delivery, QueueOptions
from polybus.core.worker import Worker, start_handler_worker

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from polybus.core.bus import AsyncBus, SendOptions

log = logging.getLogger("polybus")

MessageFactory = Callable[[Delivery], BaseMessage]


def dead_letter_name(name: str) -> str:
    """The default dead-letter queue of a queue: ``<name>.dead``, shortened with a digest when
    that would be longer than a name may be."""
    return derived_name(name, "dead", MAX_NAME)


def retries_of(headers: dict[str, Any]) -> int:
    """The retry count a message carries; anything unreadable counts as none."""
    value = headers.get(RETRIES, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class WorkQueue:
    """``send`` to it; ``consume`` it or run a ``worker`` on it. Declared on first use.

    By default a queue has a dead-letter queue, ``<name>.dead`` (where the transport has dead
    letters), which itself has none: ``bus.work_queue("orders.dead")`` reads the dead letters
    of ``orders``. With ``declare=False`` the queue is used as another program declared it:
    polybus declares nothing, and a handler's failures go to the ``dead_letter`` named (or are
    rejected, to whatever dead-letter exchange the queue has)."""

    def __init__(
        self,
        bus: AsyncBus,
        name: str,
        *,
        durable: bool,
        dead_letter: str | Literal[True] | None,
        max_priority: int | None,
        message_ttl: float | None,
        declare: bool | None,
    ) -> None:
        self.bus = bus
        self.name = bus.qualify(name)
        self.adopted = not bus._declaring(declare)
        check_bool(durable, "durable")
        if max_priority is not None:
            check_int(max_priority, "max_priority", 1, MAX_PRIORITY)
        if dead_letter is True:  # the default: a dead-letter queue where the transport has them
            wanted = bus.capabilities.dead_letter and not is_dead_letter_queue(name)
            dead_letter = dead_letter_name(name) if wanted and not self.adopted else None
        elif dead_letter is not None:
            check_name(dead_letter, "dead-letter queue")
        self.options = QueueOptions(
            durable=durable,
            dead_letter=bus.qualify(dead_letter) if dead_letter else None,
            message_ttl=check_ttl(message_ttl, "message_ttl"),
            max_priority=max_priority,
        )

    @property
    def dead_letter_queue(self) -> str | None:
        return self.options.dead_letter

    async def declare(self) -> None:
        """Declare the queue (and its dead-letter queue) — or, with ``declare=False``, check
        that it exists (and the dead-letter queue named, if one was)."""
        if not self.adopted:
            await self.bus.declare_queue(self.name, self.options)
            return
        await self.bus._adopt_queue(self.name)
        if self.options.dead_letter is not None:
            await self.bus._adopt_queue(self.options.dead_letter)

    async def send(self, body: Any, **options: Unpack[SendOptions]) -> None:
        """Send one message; returns once the broker has confirmed it. Persistent when the
        queue is durable, unless ``persistent=False``."""
        options.setdefault("persistent", self.options.durable)
        envelope = self.bus.envelope(body, options)
        await self.declare()
        await self.bus._broker.publish("", self.name, envelope)

    async def send_many(
        self, bodies: Iterable[Any], *, headers: dict[str, Any] | None = None
    ) -> None:
        """Send several messages in order, pipelined; all are encoded before any is sent."""
        options: SendOptions = {"headers": headers, "persistent": self.options.durable}
        items = [(self.name, self.bus.envelope(body, options, "send_many")) for body in bodies]
        await self.declare()
        await self.bus._broker.publish_many("", items)

    def consume(self, *, prefetch: int = 1, auto_ack: bool = False) -> Subscription:
        """A subscription to the queue: ``async with q.consume(prefetch=10) as sub: ...``."""
        return Subscription(self.bus, self.consume_spec(prefetch, auto_ack))

    def consume_spec(self, prefetch: int, auto_ack: bool = False) -> ConsumeSpec:
        return ConsumeSpec(
            self.name,
            self.options,
            prefetch=check_prefetch(prefetch),
            auto_ack=check_bool(auto_ack, "auto_ack"),
            adopt_queue=self.adopted,
        )

    async def worker(
        self,
        handler: Callable[..., Any],
        *,
        prefetch: int | None = None,
        concurrency: int = 1,
        retries: int = 3,
    ) -> Worker:
        """Run ``handler(message)`` on each message: ack on return; on an exception, send it
        again up to ``retries`` times, then move it to the dead-letter queue."""
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
        concurrency = check_int(concurrency, "concurrency", 1)
        retries = check_int(retries, "retries", 0)
        spec = self.consume_spec(prefetch if prefetch is not None else concurrency)

        async def retry_or_dead_letter(delivery: Delivery, exc: Exception) -> Outcome:
            return await self._handle_failure(spec, delivery, exc, retries)

        return await start_handler_worker(
            self.bus,
            spec,
            handler,
            make_message,
            concurrency=concurrency,
            on_failure=retry_or_dead_letter,
        )

    async def _handle_failure(
        self, spec: ConsumeSpec, delivery: Delivery, exc: Exception, retries: int
    ) -> Outcome:
        envelope = delivery.envelope
        done = retries_of(envelope.headers)
        if done < retries:
            headers = {**envelope.headers, RETRIES: done + 1}
            await self.bus._broker.publish("", self.name, replace(envelope, headers=headers))
            await self.bus._broker.ack(delivery)
            log.warning(
                "retrying message %s on %s (%d/%d): %r",
                envelope.message_id,
                self.name,
                done + 1,
                retries,
                exc,
            )
            return "retried"
        return await dead_letter(self.bus, spec, delivery, RETRIES_EXHAUSTED, error=exc)

    async def size(self) -> int:
        """Messages waiting (not counting those delivered and unacked)."""
        await self.declare()
        return await self.bus._broker.queue_size(self.name)

    async def purge(self) -> int:
        await self.declare()
        return await self.bus._broker.purge_queue(self.name)

    async def delete(self) -> None:
        await self.bus._broker.delete_queue(self.name)
        self.bus.forget_queue(self.name)
