"""Pub/sub: a fanout exchange; every subscriber gets every message published while subscribed."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, overload

from polybus.core.decorators import Handler
from polybus.core.exchange import ExchangePattern
from polybus.core.subscription import Subscription
from polybus.core.transport import ExchangeKind
from polybus.core.worker import Worker

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from polybus.core.bus import AsyncBus, SendOptions


class PubSub(ExchangePattern):
    def __init__(
        self, bus: AsyncBus, name: str, *, durable: bool = True, declare: bool | None = None
    ) -> None:
        super().__init__(bus, name, ExchangeKind.FANOUT, durable, declare)

    async def publish(self, body: Any, **options: Unpack[SendOptions]) -> None:
        """Publish to every current subscriber (and every named subscription)."""
        await self._publish(body, "", False, options, "publish")

    def subscribe(
        self, *, name: str | None = None, prefetch: int = 100, auto_ack: bool | None = None
    ) -> Subscription:
        """Transient (``name=None``: auto-acked, gone when closed) or durable named subscription
        (kept while away, shared by consumers of the name; ack each message)."""
        return Subscription(self._bus, self._subscription_spec([""], name, prefetch, auto_ack))

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
    ) -> Coroutine[Any, Any, Worker]: ...

    def worker(
        self,
        handler: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        prefetch: int | None = None,
        concurrency: int = 1,
    ) -> Coroutine[Any, Any, Worker] | Callable[[Handler], Handler]:
        """Run ``handler(message)`` on every message (a transient subscription, or the named
        one): ack on return, reject on an exception. Also a decorator."""
        size = concurrency if prefetch is None else prefetch
        return self._worker(handler, self._subscription_spec([""], name, size, None), concurrency)
