"""What pub/sub and routed patterns share: an exchange, publishing to it, and subscriptions
that are either transient (a unique exclusive queue that dies with its consumer) or named
(a durable queue kept while its consumers are away and shared by all consumers of the name)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from polybus.core.arguments import check_bool, check_int, check_prefetch
from polybus.core.deadletters import Outcome
from polybus.core.decorators import Handler, handler_or_decorator
from polybus.core.errors import InvalidArgument
from polybus.core.names import check_name, derived_name
from polybus.core.subscription import ConsumeSpec
from polybus.core.transport import Delivery, ExchangeKind, QueueOptions
from polybus.core.worker import Worker, start_handler_worker

log = logging.getLogger("polybus")

if TYPE_CHECKING:
    from polybus.core.bus import AsyncBus, SendOptions

TRANSIENT = QueueOptions(durable=False, exclusive=True, auto_delete=True)
NAMED = QueueOptions(durable=True)


class ExchangePattern:
    def __init__(
        self, bus: AsyncBus, name: str, kind: ExchangeKind, durable: bool, declare: bool | None
    ) -> None:
        self._bus = bus
        self._name = bus._qualify(name, "exchange")
        self._kind = kind
        self._durable = check_bool(durable, "durable")
        self._adopted = not bus._declaring(declare)

    @property
    def name(self) -> str:
        """The exchange's name on the broker (namespace included)."""
        return self._name

    async def declare(self) -> None:
        """Declare the exchange — or, with ``declare=False``, check that it exists."""
        if self._adopted:
            await self._bus._adopt_exchange(self._name)
        else:
            await self._bus._declare_exchange(self._name, self._kind, self._durable)

    async def delete(self) -> None:
        """Delete the exchange and its bindings (its named subscriptions' queues stay)."""
        await self._bus._broker.delete_exchange(self._name)
        self._bus._forget_exchange(self._name)

    async def _publish(
        self, body: Any, key: str, mandatory: bool, options: SendOptions, call: str
    ) -> None:
        if check_bool(mandatory, "mandatory") and options.get("delay"):
            raise InvalidArgument(
                f"{call} was given both mandatory and delay; a delayed message is routed when it"
                " is due, too late to say it reached nobody: drop one of them"
            )
        envelope = self._bus._envelope(body, options, call)
        await self.declare()
        await self._bus._broker.publish(self._name, key, envelope, mandatory=mandatory)

    def _subscription_spec(
        self, keys: Sequence[str], name: str | None, prefetch: int, auto_ack: bool | None
    ) -> ConsumeSpec:
        bindings = tuple((self._name, key) for key in keys)
        transient = name is None
        if name is None:
            queue = self._bus._transient_name("sub")
        else:  # the exchange name already carries the namespace
            queue = derived_name(self._name, check_name(name, "subscription"))
        return ConsumeSpec(
            queue,
            TRANSIENT if transient else NAMED,
            bindings,
            prefetch=check_prefetch(prefetch),
            auto_ack=transient if auto_ack is None else check_bool(auto_ack, "auto_ack"),
            transient=transient,
            exchange=(self._name, self._kind, self._durable),
            adopt_exchange=self._adopted,
        )

    def _worker(
        self, handler: Callable[..., Any] | None, spec: ConsumeSpec, concurrency: int
    ) -> Coroutine[Any, Any, Worker] | Callable[[Handler], Handler]:
        """``worker()``'s two shapes, on the subscription ``spec`` describes."""
        concurrency = check_int(concurrency, "concurrency", 1)

        def start(function: Callable[..., Any]) -> Coroutine[Any, Any, Worker]:
            return self._start_worker(spec, function, concurrency)

        def start_soon(function: Callable[..., Any]) -> None:
            self._bus._start_soon(start(function), f"a worker on {self._name!r}")

        return handler_or_decorator(handler, start, start_soon)

    async def _start_worker(
        self, spec: ConsumeSpec, handler: Callable[..., Any], concurrency: int
    ) -> Worker:
        """Run ``handler(message)`` per message; ack on return, reject on an exception."""
        broker = self._bus._broker

        async def reject(delivery: Delivery, exc: Exception) -> Outcome:
            log.error("handler failed on a message from %s; rejected", self._name, exc_info=exc)
            if not spec.auto_ack:
                await broker.nack(delivery, requeue=False)
            return "dead_lettered"

        return await start_handler_worker(
            self._bus, spec, handler, concurrency=concurrency, on_failure=reject
        )
