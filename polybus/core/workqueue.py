"""Work queue: messages wait in a durable queue until one of the workers takes them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, overload

from polybus.core.arguments import check_bool, check_int, check_prefetch, check_ttl
from polybus.core.dead_letter_queue import DeadLetters
from polybus.core.deadletters import (
    NOT_RETRIED,
    RETRIES_EXHAUSTED,
    Outcome,
    dead_letter,
    is_dead_letter_queue,
)
from polybus.core.decorators import Handler, handler_or_decorator
from polybus.core.headers import RETRIES
from polybus.core.limits import MAX_NAME, MAX_PREFETCH, MAX_PRIORITY
from polybus.core.message import PeekedMessage
from polybus.core.names import check_name, derived_name
from polybus.core.retry import RetryPolicy, retries_of, retry_policy
from polybus.core.subscription import ConsumeSpec, Subscription
from polybus.core.transport import Delivery, QueueOptions, QueueStats
from polybus.core.worker import Worker, start_handler_worker

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from polybus.core.bus import AsyncBus, SendOptions

log = logging.getLogger("polybus")


def dead_letter_name(name: str) -> str:
    """The default dead-letter queue of a queue: ``<name>.dead``, shortened with a digest when
    that would be longer than a name may be."""
    return derived_name(name, "dead", MAX_NAME)


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
        self._bus = bus
        self._name = bus._qualify(name)
        self._adopted = not bus._declaring(declare)
        check_bool(durable, "durable")
        if max_priority is not None:
            check_int(max_priority, "max_priority", 1, MAX_PRIORITY)
        if dead_letter is True:  # the default: a dead-letter queue where the transport has them
            wanted = bus.capabilities.dead_letter and not is_dead_letter_queue(name)
            dead_letter = dead_letter_name(name) if wanted and not self._adopted else None
        elif dead_letter is not None:
            check_name(dead_letter, "dead-letter queue")
        self._options = QueueOptions(
            durable=durable,
            dead_letter=bus._qualify(dead_letter) if dead_letter else None,
            message_ttl=check_ttl(message_ttl, "message_ttl"),
            max_priority=max_priority,
        )

    @property
    def name(self) -> str:
        """The queue's name on the broker (namespace included)."""
        return self._name

    @property
    def dead_letter_queue(self) -> str | None:
        """Where its dead letters go (the broker's name), if anywhere."""
        return self._options.dead_letter

    async def declare(self) -> None:
        """Declare the queue (and its dead-letter queue) — or, with ``declare=False``, check
        that it exists (and the dead-letter queue named, if one was)."""
        if not self._adopted:
            await self._bus._declare_queue(self._name, self._options)
            return
        await self._bus._adopt_queue(self._name)
        if self._options.dead_letter is not None:
            await self._bus._adopt_queue(self._options.dead_letter)

    async def send(self, body: Any, **options: Unpack[SendOptions]) -> None:
        """Send one message and wait for the broker's confirmation. Persistent when the queue
        is durable, unless ``persistent=False``."""
        options.setdefault("persistent", self._options.durable)
        envelope = self._bus._envelope(body, options)
        await self.declare()
        await self._bus._broker.publish("", self._name, envelope)

    async def send_many(
        self, bodies: Iterable[Any], *, headers: dict[str, Any] | None = None
    ) -> None:
        """Send several messages in order, pipelined, with one wait; all are encoded before
        any is sent."""
        options: SendOptions = {"headers": headers, "persistent": self._options.durable}
        envelope = self._bus._envelopes(options, "send_many")
        items = [(self._name, envelope(body)) for body in bodies]
        await self.declare()
        await self._bus._broker.publish_many("", items)

    def consume(self, *, prefetch: int = 1, auto_ack: bool = False) -> Subscription:
        """A subscription to the queue: ``async with q.consume(prefetch=10) as sub: ...``."""
        return Subscription(self._bus, self._spec(prefetch, auto_ack))

    def _spec(self, prefetch: int, auto_ack: bool = False) -> ConsumeSpec:
        return ConsumeSpec(
            self._name,
            self._options,
            prefetch=check_prefetch(prefetch),
            auto_ack=check_bool(auto_ack, "auto_ack"),
            adopt_queue=self._adopted,
        )

    @overload
    def worker(
        self,
        handler: None = None,
        *,
        prefetch: int | None = ...,
        concurrency: int = ...,
        retries: int | RetryPolicy = ...,
    ) -> Callable[[Handler], Handler]: ...

    @overload
    def worker(
        self,
        handler: Callable[..., Any],
        *,
        prefetch: int | None = ...,
        concurrency: int = ...,
        retries: int | RetryPolicy = ...,
    ) -> Coroutine[Any, Any, Worker]: ...

    def worker(
        self,
        handler: Callable[..., Any] | None = None,
        *,
        prefetch: int | None = None,
        concurrency: int = 1,
        retries: int | RetryPolicy = 3,
    ) -> Coroutine[Any, Any, Worker] | Callable[[Handler], Handler]:
        """Run ``handler(message)`` on each message — a coroutine on the loop, a plain function
        on the worker's own threads: ack on return; on an exception, send it again, delayed,
        as the ``retries`` policy says (a number: that many retries with the default backoff,
        0.5 s doubling), then move it to the dead-letter queue. As a decorator
        (``@q.worker(prefetch=1)``) it starts the worker and returns the function."""

        concurrency = check_int(concurrency, "concurrency", 1)
        policy = retry_policy(retries)
        spec = self._spec(prefetch if prefetch is not None else concurrency)

        def start(function: Callable[..., Any]) -> Coroutine[Any, Any, Worker]:
            return self._start_worker(spec, function, concurrency, policy)

        def start_soon(function: Callable[..., Any]) -> None:
            self._bus._start_soon(start(function), f"a worker on {self._name!r}")

        return handler_or_decorator(handler, start, start_soon)

    async def _start_worker(
        self, spec: ConsumeSpec, handler: Callable[..., Any], concurrency: int, policy: RetryPolicy
    ) -> Worker:
        if policy.max_retries and policy.backoff and not self._bus.capabilities.delay:
            log.warning(
                "a worker on %s retries at once: %s:// cannot delay a message (%s)",
                self._name,
                self._bus._transport.url.scheme,
                self._bus.capabilities.reason or "not supported",
            )

        async def retry_or_dead_letter(delivery: Delivery, exc: Exception) -> Outcome:
            return await self._handle_failure(spec, delivery, exc, policy)

        return await start_handler_worker(
            self._bus, spec, handler, concurrency=concurrency, on_failure=retry_or_dead_letter
        )

    async def _handle_failure(
        self, spec: ConsumeSpec, delivery: Delivery, exc: Exception, policy: RetryPolicy
    ) -> Outcome:
        envelope = delivery.envelope
        done = retries_of(envelope.headers)
        if policy.retries(exc, done):
            # sent again delayed, then acked: a crash in between leaves it twice, never lost;
            # a message with a TTL is not delayed (a delayed message cannot expire yet)
            delay = policy.delay(done + 1)
            can_delay = self._bus.capabilities.delay and envelope.expiration is None
            headers = {**envelope.headers, RETRIES: done + 1}
            again = replace(envelope, headers=headers, delay=delay if can_delay else None)
            await self._bus._broker.publish("", self._name, again)
            await self._bus._broker.ack(delivery)
            log.warning(
                "retrying message %s on %s (%d/%d) in %.2fs: %r",
                envelope.message_id,
                self._name,
                done + 1,
                policy.max_retries,
                again.delay or 0.0,
                exc,
            )
            return "retried"
        reason = RETRIES_EXHAUSTED if done >= policy.max_retries else NOT_RETRIED
        return await dead_letter(self._bus, spec, delivery, reason, error=exc)

    async def size(self) -> int:
        """Messages waiting (not counting those delivered and unacked)."""
        await self.declare()
        return await self._bus._broker.queue_size(self._name)

    async def stats(self) -> QueueStats:
        """Messages waiting and, where the broker says, those delivered and not yet acked
        and the consumers reading the queue."""
        await self.declare()
        return await self._bus._broker.queue_stats(self._name)

    async def peek(self, limit: int = 10) -> list[PeekedMessage]:
        """The first ``limit`` waiting messages, in the order they would be delivered, left
        where they are: no consumer sees a difference.

        :raises CapabilityMissing: the broker cannot read a queue without consuming it.
        """
        limit = check_int(limit, "limit", 1, MAX_PREFETCH)
        await self.declare()
        return [PeekedMessage(d) for d in await self._bus._broker.peek(self._name, limit)]

    @property
    def dead_letters(self) -> DeadLetters:
        """Its dead letters: see why each died, replay them, or discard them."""
        return DeadLetters(self._bus, self._name, self._options.dead_letter, self.declare)

    async def purge(self) -> int:
        """Drop the waiting messages; return how many there were."""
        await self.declare()
        return await self._bus._broker.purge_queue(self._name)

    async def delete(self) -> None:
        """Delete the queue and its messages."""
        await self._bus._broker.delete_queue(self._name)
        self._bus._forget_queue(self._name)
