"""The blocking API's patterns, derived from the asyncio ones (``bridge``): each method runs the
asyncio method on the bus's loop thread and waits. Written by hand: ``consume``/``subscribe``
(a blocking subscription) and ``worker`` (a handler on the worker's threads, started before
the call returns, or by the decorator)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any, overload

from polybus.blocking.bridge import Blocking, mirrors, waits, waits_into
from polybus.blocking.portal import Portal
from polybus.blocking.subscription import Subscription
from polybus.core import dead_letter_queue, pubsub, router, rpc, workqueue
from polybus.core import worker as core_worker
from polybus.core.decorators import Handler, handler_or_decorator
from polybus.core.retry import RetryPolicy


class Worker(Blocking[core_worker.Worker]):
    """A running worker; ``close()`` stops it gracefully (the bus's ``close()`` does too)."""

    queue = mirrors[str]("queue")
    acked = mirrors[int]("acked")
    retried = mirrors[int]("retried")
    dead_lettered = mirrors[int]("dead_lettered")
    errors = mirrors[int]("errors")
    close = waits(core_worker.Worker.close)


def _started(
    portal: Portal,
    handler: Callable[..., Any] | None,
    start: Callable[[Callable[..., Any]], Coroutine[Any, Any, core_worker.Worker]],
) -> Worker | Callable[[Handler], Handler]:
    """``worker()``'s two shapes in the blocking API: the worker runs before it returns."""

    def run(function: Callable[..., Any]) -> Worker:
        return Worker(portal, portal.call(start(function)))

    return handler_or_decorator(handler, run, run)


class DeadLetters(Blocking[dead_letter_queue.DeadLetters]):
    """The dead letters of a queue: see why each died, replay them, or discard them."""

    queue = mirrors[str | None]("queue")
    count = waits(dead_letter_queue.DeadLetters.count)
    peek = waits(dead_letter_queue.DeadLetters.peek)
    replay = waits(dead_letter_queue.DeadLetters.replay)
    discard = waits(dead_letter_queue.DeadLetters.discard)


class WorkQueue(Blocking[workqueue.WorkQueue]):
    """``send`` to it; ``consume`` it or run a ``worker`` on it. Declared on first use."""

    name = mirrors[str]("name")
    dead_letter_queue = mirrors[str | None]("dead_letter_queue")
    stats = waits(workqueue.WorkQueue.stats)
    peek = waits(workqueue.WorkQueue.peek)
    declare = waits(workqueue.WorkQueue.declare)
    send = waits(workqueue.WorkQueue.send)
    send_many = waits(workqueue.WorkQueue.send_many)
    size = waits(workqueue.WorkQueue.size)
    purge = waits(workqueue.WorkQueue.purge)
    delete = waits(workqueue.WorkQueue.delete)

    @property
    def dead_letters(self) -> DeadLetters:
        """Its dead letters: see why each died, replay them, or discard them."""
        return DeadLetters(self._portal, self._core.dead_letters)

    def consume(self, *, prefetch: int = 1, auto_ack: bool = False) -> Subscription:
        """A subscription to the queue: ``with q.consume(prefetch=10) as sub: ...``."""
        return Subscription(self._portal, self._core._bus, self._core._spec(prefetch, auto_ack))

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
    ) -> Worker: ...

    def worker(
        self,
        handler: Callable[..., Any] | None = None,
        *,
        prefetch: int | None = None,
        concurrency: int = 1,
        retries: int | RetryPolicy = 3,
    ) -> Worker | Callable[[Handler], Handler]:
        """Run ``handler(message)`` on each message on worker threads: ack on return; on an
        exception send it again, delayed, as the ``retries`` policy says (a number: that many
        retries, 0.5 s doubling), then dead-letter it. As a decorator
        (``@q.worker(prefetch=1)``) it starts the worker and returns the function unchanged."""
        core = self._core
        return _started(
            self._portal,
            handler,
            lambda function: core.worker(
                function, prefetch=prefetch, concurrency=concurrency, retries=retries
            ),
        )


class PubSub(Blocking[pubsub.PubSub]):
    name = mirrors[str]("name")
    declare = waits(pubsub.PubSub.declare)
    delete = waits(pubsub.PubSub.delete)
    publish = waits(pubsub.PubSub.publish)

    def subscribe(
        self, *, name: str | None = None, prefetch: int = 100, auto_ack: bool | None = None
    ) -> Subscription:
        """Transient (``name=None``: auto-acked, gone when closed) or durable named subscription
        (kept while away, shared by consumers of the name; ack each message)."""
        spec = self._core._subscription_spec([""], name, prefetch, auto_ack)
        return Subscription(self._portal, self._core._bus, spec)

    @overload
    def worker(
        self,
        handler: None = None,
        *,
        name: str | None = ...,
        prefetch: int | None = ...,
        concurrency: int = ...,
    ) -> Callable[[Handler], Handler]: ...

    @overload
    def worker(
        self,
        handler: Callable[..., Any],
        *,
        name: str | None = ...,
        prefetch: int | None = ...,
        concurrency: int = ...,
    ) -> Worker: ...

    def worker(
        self,
        handler: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        prefetch: int | None = None,
        concurrency: int = 1,
    ) -> Worker | Callable[[Handler], Handler]:
        """Run ``handler(message)`` on every message on worker threads: ack on return, reject
        on an exception. Also a decorator."""
        core = self._core
        return _started(
            self._portal,
            handler,
            lambda function: core.worker(
                function, name=name, prefetch=prefetch, concurrency=concurrency
            ),
        )


class Router(Blocking[router.Router]):
    name = mirrors[str]("name")
    declare = waits(router.Router.declare)
    delete = waits(router.Router.delete)
    publish = waits(router.Router.publish)

    def subscribe(
        self,
        keys: Iterable[str],
        *,
        name: str | None = None,
        prefetch: int = 100,
        auto_ack: bool | None = None,
    ) -> Subscription:
        """Messages whose key matches any of ``keys`` (exact keys, or topic patterns)."""
        spec = self._core._spec(keys, name, prefetch, auto_ack)
        return Subscription(self._portal, self._core._bus, spec)

    @overload
    def worker(
        self,
        handler: None = None,
        *,
        keys: Iterable[str],
        name: str | None = ...,
        prefetch: int | None = ...,
        concurrency: int = ...,
    ) -> Callable[[Handler], Handler]: ...

    @overload
    def worker(
        self,
        handler: Callable[..., Any],
        *,
        keys: Iterable[str],
        name: str | None = ...,
        prefetch: int | None = ...,
        concurrency: int = ...,
    ) -> Worker: ...

    def worker(
        self,
        handler: Callable[..., Any] | None = None,
        *,
        keys: Iterable[str],
        name: str | None = None,
        prefetch: int | None = None,
        concurrency: int = 1,
    ) -> Worker | Callable[[Handler], Handler]:
        """Run ``handler(message)`` on every message whose key matches ``keys``, on worker
        threads: ack on return, reject on an exception. Also a decorator."""
        core = self._core
        return _started(
            self._portal,
            handler,
            lambda function: core.worker(
                function, keys=keys, name=name, prefetch=prefetch, concurrency=concurrency
            ),
        )


class Rpc(Blocking[rpc.Rpc]):
    name = mirrors[str]("name")
    declare = waits(rpc.Rpc.declare)
    delete = waits(rpc.Rpc.delete)
    call = waits(rpc.Rpc.call)
    cast = waits(rpc.Rpc.cast)
    serve = waits_into(rpc.Rpc.serve, Worker)

    def handler(self, function: Handler) -> Handler:
        """``@rpc.handler``: serve with the function (on worker threads) and return it."""
        self.serve(function)
        return function
