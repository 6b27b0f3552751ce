"""The blocking API's patterns: thin wrappers that run the asyncio core's methods on the bus's
loop thread. Consuming is the exception: deliveries go straight into a thread-safe queue that the
caller's thread reads, and acks are batched back, so no message costs a cross-thread round trip."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from polybus.core import exchange, pubsub, router, rpc, workqueue
from polybus.core import worker as core_worker
from polybus.core.arguments import check_timeout
from polybus.core.errors import Closed, ReceiveTimeout
from polybus.core.message import Message
from polybus.core.subscription import ConsumeSpec, QueueConsumer
from polybus.core.transport import Delivery

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from polybus.blocking.bus import Bus
    from polybus.core.bus import SendOptions

Handler = TypeVar("Handler", bound=Callable[..., Any])


def _message(delivery: Delivery) -> Message:
    """A message handed to a worker's handler: the worker settles it, not the handler."""
    return Message(delivery, None)


class Subscription:
    """``with q.consume() as sub: for msg in sub: ...`` or ``sub.receive(timeout)``."""

    def __init__(self, bus: Bus, spec: ConsumeSpec) -> None:
        self._bus = bus
        self._buffer: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self._consumer = QueueConsumer(bus.core, spec, self._buffer.put)
        self._started = False

    @property
    def queue(self) -> str:
        """The queue this subscription consumes (server-side name, namespace included)."""
        return self._consumer.queue

    def start(self) -> Subscription:
        if not self._started:
            self._started = True
            self._bus.call(self._consumer.start())
            self._bus.core.track(self, self._close)
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
        return Message(delivery, self._consumer)

    def __iter__(self) -> Iterator[Message]:
        while True:
            try:
                yield self.receive()
            except Closed:
                return

    async def _close(self) -> None:
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
        self._bus.core.untrack(self)

    def close(self) -> None:
        """Stop consuming; unreceived messages return to the queue; a transient queue goes."""
        if self._started and not self._consumer.closed:
            self._bus.call(self._close())

    def __enter__(self) -> Subscription:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Worker:
    """A running worker; ``close()`` stops it gracefully (the bus's ``close()`` does too)."""

    def __init__(self, bus: Bus, worker: core_worker.Worker) -> None:
        self._bus = bus
        self.core = worker

    @property
    def acked(self) -> int:
        """Messages done: the handler returned."""
        return self.core.acked

    @property
    def retried(self) -> int:
        """Messages sent again for another attempt after the handler raised."""
        return self.core.retried

    @property
    def dead_lettered(self) -> int:
        """Messages given up on: moved to the dead-letter queue, or dropped without one."""
        return self.core.dead_lettered

    @property
    def errors(self) -> int:
        """Messages polybus could not settle (the broker delivers them again)."""
        return self.core.errors

    def close(self) -> None:
        self._bus.call(self.core.close())


class WorkQueue:
    def __init__(self, bus: Bus, core: workqueue.WorkQueue) -> None:
        self._bus = bus
        self.core = core

    @property
    def name(self) -> str:
        return self.core.name

    @property
    def dead_letter_queue(self) -> str | None:
        return self.core.dead_letter_queue

    def declare(self) -> None:
        """Create the queue now (sending and consuming declare it too)."""
        self._bus.call(self.core.declare())

    def send(self, body: Any, **options: Unpack[SendOptions]) -> None:
        """Send one message and wait for the broker's confirmation."""
        self._bus.call(self.core.send(body, **options))

    def send_many(self, bodies: Iterable[Any], *, headers: dict[str, Any] | None = None) -> None:
        """Send several messages in order, pipelined, with one wait."""
        self._bus.call(self.core.send_many(list(bodies), headers=headers))

    def consume(self, *, prefetch: int = 1, auto_ack: bool = False) -> Subscription:
        return Subscription(self._bus, self.core.consume_spec(prefetch, auto_ack))

    @overload
    def worker(
        self,
        handler: None = None,
        *,
        prefetch: int | None = ...,
        concurrency: int = ...,
        retries: int = ...,
    ) -> Callable[[Handler], Handler]: ...

    @overload
    def worker(
        self,
        handler: Callable[..., Any],
        *,
        prefetch: int | None = ...,
        concurrency: int = ...,
        retries: int = ...,
    ) -> Worker: ...

    def worker(
        self,
        handler: Callable[..., Any] | None = None,
        *,
        prefetch: int | None = None,
        concurrency: int = 1,
        retries: int = 3,
    ) -> Worker | Callable[[Handler], Handler]:
        """Run ``handler(message)`` on each message on worker threads: ack on return; on an
        exception send it again up to ``retries`` times, then dead-letter it. As a decorator
        (``@q.worker(prefetch=1)``) it starts the worker and returns the function unchanged."""

        def start(function: Callable[..., Any]) -> Worker:
            return Worker(
                self._bus,
                self._bus.call(
                    self.core.start_worker(
                        function,
                        _message,
                        prefetch=prefetch,
                        concurrency=concurrency,
                        retries=retries,
                    )
                ),
            )

        if handler is not None:
            return start(handler)

        def decorate(function: Handler) -> Handler:
            start(function)
            return function

        return decorate

    def size(self) -> int:
        """Messages waiting (not counting those delivered and unacked)."""
        return self._bus.call(self.core.size())

    def purge(self) -> int:
        return self._bus.call(self.core.purge())

    def delete(self) -> None:
        self._bus.call(self.core.delete())


class _ExchangeWrapper:
    def __init__(self, bus: Bus, core: exchange.ExchangePattern) -> None:
        self._bus = bus
        self._exchange = core

    @property
    def name(self) -> str:
        return self._exchange.name

    def declare(self) -> None:
        """Create the exchange now (publishing and subscribing declare it too)."""
        self._bus.call(self._exchange.declare())

    def delete(self) -> None:
        """Delete the exchange and its bindings (its named subscriptions' queues stay)."""
        self._bus.call(self._exchange.delete())

    def _worker(self, spec: ConsumeSpec, handler: Callable[..., Any], concurrency: int) -> Worker:
        started = self._exchange.start_worker(spec, handler, _message, concurrency)
        return Worker(self._bus, self._bus.call(started))


class PubSub(_ExchangeWrapper):
    def __init__(self, bus: Bus, core: pubsub.PubSub) -> None:
        super().__init__(bus, core)
        self.core = core

    def publish(self, body: Any, **options: Unpack[SendOptions]) -> None:
        """Publish to every current subscriber (and every named subscription)."""
        self._bus.call(self.core.publish(body, **options))

    def subscribe(
        self, *, name: str | None = None, prefetch: int = 100, auto_ack: bool | None = None
    ) -> Subscription:
        """Transient (``name=None``: auto-acked, gone when closed) or durable named subscription
        (kept while away, shared by consumers of the name; ack each message)."""
        return Subscription(self._bus, self.core.subscription_spec([""], name, prefetch, auto_ack))

    def worker(
        self,
        handler: Callable[..., Any],
        *,
        name: str | None = None,
        prefetch: int | None = None,
        concurrency: int = 1,
    ) -> Worker:
        spec = self.core.subscription_spec([""], name, prefetch or concurrency, None)
        return self._worker(spec, handler, concurrency)


class Router(_ExchangeWrapper):
    def __init__(self, bus: Bus, core: router.Router) -> None:
        super().__init__(bus, core)
        self.core = core

    def publish(
        self, body: Any, *, key: str, mandatory: bool = False, **options: Unpack[SendOptions]
    ) -> None:
        """Publish with a routing key; ``mandatory`` raises ``Unroutable`` if no queue matches."""
        self._bus.call(self.core.publish(body, key=key, mandatory=mandatory, **options))

    def subscribe(
        self,
        keys: Iterable[str],
        *,
        name: str | None = None,
        prefetch: int = 100,
        auto_ack: bool | None = None,
    ) -> Subscription:
        """Messages whose key matches any of ``keys`` (exact keys, or topic patterns)."""
        return Subscription(self._bus, self.core.routing_spec(keys, name, prefetch, auto_ack))

    def worker(
        self,
        handler: Callable[..., Any],
        *,
        keys: Iterable[str],
        name: str | None = None,
        prefetch: int | None = None,
        concurrency: int = 1,
    ) -> Worker:
        spec = self.core.routing_spec(keys, name, prefetch or concurrency, None)
        return self._worker(spec, handler, concurrency)


class Rpc:
    def __init__(self, bus: Bus, core: rpc.Rpc) -> None:
        self._bus = bus
        self.core = core

    @property
    def name(self) -> str:
        return self.core.name

    def declare(self) -> None:
        """Create the request queue now (calls and servers declare it too)."""
        self._bus.call(self.core.declare())

    def delete(self) -> None:
        """Delete the request queue (stop its servers first: their consumers go with it)."""
        self._bus.call(self.core.delete())

    def call(
        self, body: Any, *, timeout: float = 30.0, headers: dict[str, Any] | None = None
    ) -> Any:
        """Send a request and return the reply's body (``RpcTimeout``, ``RemoteError``)."""
        return self._bus.call(self.core.call(body, timeout=timeout, headers=headers))

    def cast(self, body: Any, *, headers: dict[str, Any] | None = None) -> None:
        """Send a request that expects no reply."""
        self._bus.call(self.core.cast(body, headers=headers))

    def serve(
        self, handler: Callable[..., Any], *, concurrency: int = 1, prefetch: int | None = None
    ) -> Worker:
        """Answer requests with ``handler(body)`` on worker threads."""
        started = self.core.serve(handler, concurrency=concurrency, prefetch=prefetch)
        return Worker(self._bus, self._bus.call(started))

    def handler(self, function: Handler) -> Handler:
        """``@rpc.handler`` — serve with the function and return it unchanged."""
        self.serve(function)
        return function
