"""What every transport needs besides its broker mapping: a record of what it declared, and
its replay after the broker lost it.

A transport records in its ``Topology`` every queue, exchange, binding and consumer it creates,
and forgets them as they are deleted (a queue takes its bindings and consumers with it, an
exchange its bindings). When its connection comes back, or the broker restarted, ``replay``
declares them again in one order — exchanges, queues, bindings, then consumers — with one
policy: a lost connection stops the replay (``ConnectionFailed``: the caller tries again); a
binding or consumer whose queue or exchange is gone (``NotFound``) is forgotten; any other
refusal is logged and the rest is still replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from polybus.core.errors import ConnectionFailed, NotFound, PolybusError
from polybus.core.transport import ExchangeKind, QueueOptions

log = logging.getLogger("polybus")


class Resumable(Protocol):
    """A consumer a transport can start again on a new connection."""

    @property
    def queue(self) -> str: ...

    async def resume(self) -> None:
        """Consume again (under the same tag), on the connection the transport has now."""


class Topology:
    """The queues, exchanges, bindings and consumers one transport created."""

    def __init__(self) -> None:
        self.queues: dict[str, QueueOptions] = {}
        self.exchanges: dict[str, tuple[ExchangeKind, bool]] = {}
        self.bindings: set[tuple[str, str, str]] = set()  # (queue, exchange, key)
        self.consumers: dict[str, Resumable] = {}  # by consumer tag

    def queue_declared(self, name: str, options: QueueOptions) -> None:
        self.queues[name] = options

    def queue_deleted(self, name: str) -> None:
        """Forget a queue, its bindings and its consumers (they went with it)."""
        self.queues.pop(name, None)
        self.bindings = {b for b in self.bindings if b[0] != name}
        for tag in [tag for tag, consumer in self.consumers.items() if consumer.queue == name]:
            del self.consumers[tag]

    def exchange_declared(self, name: str, kind: ExchangeKind, durable: bool) -> None:
        self.exchanges[name] = (kind, durable)

    def exchange_deleted(self, name: str) -> None:
        """Forget an exchange and its bindings."""
        self.exchanges.pop(name, None)
        self.bindings = {b for b in self.bindings if b[1] != name}

    def bound(self, queue: str, exchange: str, key: str) -> None:
        self.bindings.add((queue, exchange, key))

    def consuming(self, tag: str, consumer: Resumable) -> None:
        self.consumers[tag] = consumer

    def cancelled(self, tag: str) -> Resumable | None:
        return self.consumers.pop(tag, None)

    async def replay(
        self,
        *,
        exchange: Callable[[str, ExchangeKind, bool], Awaitable[None]],
        queue: Callable[[str, QueueOptions], Awaitable[None]],
        binding: Callable[[str, str, str], Awaitable[None]],
        where: str,
    ) -> None:
        """Declare everything again with the transport's own primitives, then resume the
        consumers (see the module's docstring for the order and the policy).

        :raises ConnectionFailed: the connection was lost again; nothing else is raised.
        """
        for name, (kind, durable) in list(self.exchanges.items()):
            await _step(exchange(name, kind, durable), f"exchange {name!r}", where)
        for name, options in list(self.queues.items()):
            await _step(queue(name, options), f"queue {name!r}", where)
        for queue_name, exchange_name, key in list(self.bindings):
            what = f"the binding of {queue_name!r} to {exchange_name!r}"
            if not await _step(binding(queue_name, exchange_name, key), what, where):
                self.bindings.discard((queue_name, exchange_name, key))
        for tag, consumer in list(self.consumers.items()):
            if not await _step(consumer.resume(), f"the consumer of {consumer.queue!r}", where):
                self.consumers.pop(tag, None)


async def _step(step: Awaitable[None], what: str, where: str) -> bool:
    """Run one replay step; False when what it needs is gone (it is then forgotten)."""
    try:
        await step
    except ConnectionFailed:
        raise
    except NotFound as exc:
        log.info("not restoring %s on %s: %s", what, where, exc)
        return False
    except PolybusError as exc:
        log.error("could not restore %s on %s: %s", what, where, exc)
    return True
