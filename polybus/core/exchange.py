"""What pub/sub and routed patterns share: an exchange, publishing to it, and subscriptions
that are either transient (a unique exclusive queue that dies with its consumer) or named
(a durable queue kept while its consumers are away and shared by all consumers of the name)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from polybus.core.arguments import check_bool, check_int, check_prefetch
from polybus.core.deadletters import Outcome
from polybus.core.message import AsyncMessage, BaseMessage
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
        self.bus = bus
        self.name = bus.qualify(name, "exchange")
        self.kind = kind
        self.durable = check_bool(durable, "durable")
        self.adopted = not bus._declaring(declare)

    async def declare(self) -> None:
        """Declare the exchange — or, with ``declare=False``, check that it exists."""
        if self.adopted:
            await self.bus._adopt_exchange(self.name)
        else:
            await self.bus.declare_exchange(self.name, self.kind, self.durable)

    async def delete(self) -> None:
        """Delete the exchange and its bindings (its named subscriptions' queues stay)."""
        await self.bus._broker.delete_exchange(self.name)
        self.bus.forget_exchange(self.name)

    async def _publish(
        self, body: Any, key: str, mandatory: bool, options: SendOptions, call: str
    ) -> None:
        envelope = self.bus.envelope(body, options, call)
        await self.declare()
        await self.bus._broker.publish(
            self.name, key, envelope, mandatory=check_bool(mandatory, "mandatory")
        )

    def subscription_spec(
        self, keys: Sequence[str], name: str | None, prefetch: int, auto_ack: bool | None
    ) -> ConsumeSpec:
        bindings = tuple((self.name, key) for key in keys)
        transient = name is None
        if name is None:
            queue = self.bus.transient_name("sub")
        else:  # the exchange name already carries the namespace
            queue = derived_name(self.name, check_name(name, "subscription"))
        return ConsumeSpec(
            queue,
            TRANSIENT if transient else NAMED,
            bindings,
            prefetch=check_prefetch(prefetch),
            auto_ack=transient if auto_ack is None else check_bool(auto_ack, "auto_ack"),
            transient=transient,
            exchange=(self.name, self.kind, self.durable),
            adopt_exchange=self.adopted,
        )

    async def start_worker(
        self,
        spec: ConsumeSpec,
        handler: Callable[..., Any],
        make_message: Callable[[Delivery], BaseMessage],
        concurrency: int,
    ) -> Worker:
        """Run ``handler(message)`` per message; ack on return, reject on an exception."""
        broker = self.bus._broker
        concurrency = check_int(concurrency, "concurrency", 1)

        async def reject(delivery: Delivery, exc: Exception) -> Outcome:
            log.error("handler failed on a message from %s; rejected", self.name, exc_info=exc)
            if not spec.auto_ack:
                await broker.nack(delivery, requeue=False)
            return "dead_lettered"

        return await start_handler_worker(
            self.bus, spec, handler, make_message, concurrency=concurrency, on_failure=reject
        )

    async def async_worker(
        self, spec: ConsumeSpec, handler: Callable[..., Any], concurrency: int
    ) -> Worker:
        return await self.start_worker(
            spec, handler, lambda delivery: AsyncMessage(delivery, None), concurrency
        )
