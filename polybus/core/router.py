"""Routed: a direct or topic exchange; subscribers choose messages by routing key or pattern."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from polybus.core.decorators import Handler
from polybus.core.errors import InvalidArgument, InvalidName
from polybus.core.exchange import ExchangePattern
from polybus.core.names import check_key, check_pattern
from polybus.core.subscription import ConsumeSpec, Subscription
from polybus.core.transport import ExchangeKind
from polybus.core.worker import Worker

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from polybus.core.bus import AsyncBus, SendOptions


class Router(ExchangePattern):
    def __init__(
        self,
        bus: AsyncBus,
        name: str,
        kind: Literal["direct", "topic"],
        *,
        durable: bool = True,
        declare: bool | None = None,
    ) -> None:
        if kind not in ("direct", "topic"):
            raise InvalidArgument(f"router kind must be 'direct' or 'topic', not {kind!r}")
        super().__init__(bus, name, ExchangeKind(kind), durable, declare)

    async def publish(
        self, body: Any, *, key: str, mandatory: bool = False, **options: Unpack[SendOptions]
    ) -> None:
        """Publish with a routing key; ``mandatory`` raises ``Unroutable`` if no queue matches."""
        check_key(key)
        await self._publish(body, key, mandatory, options, "publish")

    def _spec(
        self, keys: Iterable[str], name: str | None, prefetch: int, auto_ack: bool | None
    ) -> ConsumeSpec:
        if isinstance(keys, str):
            raise InvalidArgument(
                f"keys must be a list of keys or patterns, not the str {keys!r};"
                f" did you mean [{keys!r}]?"
            )
        try:
            given = list(keys)
        except TypeError:
            raise InvalidArgument(
                f"keys must be a list of keys or patterns, not {keys!r}"
            ) from None
        check = check_pattern if self._kind is ExchangeKind.TOPIC else check_key
        checked: Sequence[str] = [check(key) for key in given]
        if not checked:
            raise InvalidName("subscribe needs at least one key (use '#' for every message)")
        return self._subscription_spec(checked, name, prefetch, auto_ack)

    def subscribe(
        self,
        keys: Iterable[str],
        *,
        name: str | None = None,
        prefetch: int = 100,
        auto_ack: bool | None = None,
    ) -> Subscription:
        """Messages whose key matches any of ``keys`` (exact keys, or topic patterns)."""
        return Subscription(self._bus, self._spec(keys, name, prefetch, auto_ack))

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
    ) -> Coroutine[Any, Any, Worker]: ...

    def worker(
        self,
        handler: Callable[..., Any] | None = None,
        *,
        keys: Iterable[str],
        name: str | None = None,
        prefetch: int | None = None,
        concurrency: int = 1,
    ) -> Coroutine[Any, Any, Worker] | Callable[[Handler], Handler]:
        """Run ``handler(message)`` on every message whose key matches ``keys``: ack on return,
        reject on an exception. Also a decorator."""
        size = concurrency if prefetch is None else prefetch
        return self._worker(handler, self._spec(keys, name, size, None), concurrency)
