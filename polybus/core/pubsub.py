"""Pub/sub: a fanout exchange; every subscriber gets every message published while subscribed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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
        return Subscription(self.bus, self.subscription_spec([""], name, prefetch, auto_ack))

    async def worker(
        self,
        handler: Callable[..., Any],
        *,
        name: str | None = None,
        prefetch: int | None = None,
        concurrency: int = 1,
    ) -> Worker:
        spec = self.subscription_spec(
            [""], name, concurrency if prefetch is None else prefetch, None
        )
        return await self.async_worker(spec, handler, concurrency)
