"""The transport as the patterns use it: every call bounded, every error a ``PolybusError``.

The patterns never call a transport directly. Through ``Broker``, each primitive gets the bus's
``operation_timeout`` (``PublishFailed`` for a publish whose confirmation did not come — the
message may or may not be stored — ``ConnectionFailed`` for anything else), ``close()`` ends the
calls still in flight with ``Closed``, and an exception a transport let escape (a bug) reaches
the caller as a ``PolybusError`` that says so, never as a client library's own. Acks are the
exception: the contract has them return at once, and they run on every message.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from polybus.core.deadlines import Deadlines
from polybus.core.errors import Closed, ConnectionFailed, PolybusError, PublishFailed
from polybus.core.transport import (
    DeliverCallback,
    Delivery,
    Envelope,
    ExchangeKind,
    QueueOptions,
    QueueStats,
    Transport,
)

T = TypeVar("T")
Doing = tuple[str, ...]  # a format and its arguments, made into text only when it is shown


class Broker:
    """One bus's transport, bounded (see the module's docstring)."""

    def __init__(self, transport: Transport, timeout: float) -> None:
        self.transport = transport
        self.deadlines = Deadlines(timeout)
        self.where = transport.url.redacted()
        self.closing = False
        self.ack = transport.ack  # queued, returns at once: as it is, on the hot path
        self._unanswered = False  # a call timed out while closing: no more goodbyes

    async def _call(
        self, call: Awaitable[T], doing: Doing, failure: type[PolybusError] = ConnectionFailed
    ) -> T:
        if self._unanswered:
            # a goodbye already waited operation_timeout in vain: the next would too, one after
            # the other, and close() would take a multiple of the bound every call keeps
            if inspect.iscoroutine(call):
                call.close()
            raise Closed(
                f"{_text(doing)}: skipped, {self.where} stopped answering while the bus closed"
            )
        try:
            return await self.deadlines.bounded(call, self._timed_out, (failure, doing))
        except Closed:
            raise
        except PolybusError as exc:
            if self.closing:  # it failed because the bus closed under it
                raise Closed(f"{_text(doing)}: the bus to {self.where} was closed") from exc
            raise
        except Exception as exc:  # a transport bug: still a PolybusError for the caller
            raise failure(
                f"{_text(doing)}: the {self.transport.url.scheme}:// transport failed"
                f" unexpectedly ({exc!r}); this is a polybus bug, please report it"
            ) from exc

    def _timed_out(self, seconds: float, context: tuple[type[PolybusError], Doing]) -> PolybusError:
        failure, doing = context
        if self.closing:
            self._unanswered = True
        if failure is PublishFailed:
            return PublishFailed(
                f"{_text(doing)}: {self.where} did not confirm within {seconds:g}s (the URL's"
                " operation_timeout); the outcome is unknown: the message may or may not have"
                " been stored"
            )
        return failure(
            f"{_text(doing)}: {self.where} did not answer within {seconds:g}s (the URL's"
            " operation_timeout)"
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def connect(self) -> None:
        await self._call(self.transport.connect(), ("connecting to %s", self.where))

    async def close(self) -> None:
        """Close the transport (dropping it if that fails or takes too long), then end every
        call still in flight with ``Closed``. A call that fails while the bus closes raises
        ``Closed`` too: that is why it failed."""
        self.closing = True
        try:
            await self._call(self.transport.close(), ("closing the connection to %s", self.where))
        except PolybusError:
            self._unanswered = False  # dropping the connection says nothing to the broker
            await self.abort()
        finally:
            self.deadlines.end_all(f"the bus to {self.where} was closed during the call")

    async def abort(self) -> None:
        await self._call(self.transport.abort(), ("dropping the connection to %s", self.where))

    # -- topology ---------------------------------------------------------------------------

    async def declare_queue(self, name: str, options: QueueOptions) -> None:
        await self._call(self.transport.declare_queue(name, options), ("declaring queue %r", name))

    async def delete_queue(self, name: str) -> None:
        await self._call(self.transport.delete_queue(name), ("deleting queue %r", name))

    async def purge_queue(self, name: str) -> int:
        return await self._call(self.transport.purge_queue(name), ("purging queue %r", name))

    async def queue_size(self, name: str) -> int:
        return await self._call(self.transport.queue_size(name), ("counting queue %r", name))

    async def queue_stats(self, name: str) -> QueueStats:
        return await self._call(self.transport.queue_stats(name), ("counting queue %r", name))

    async def queue_names(self) -> list[str]:
        return await self._call(
            self.transport.queue_names(), ("listing the queues of %s", self.where)
        )

    async def peek(self, name: str, limit: int) -> list[Delivery]:
        return await self._call(self.transport.peek(name, limit), ("reading queue %r", name))

    async def declare_exchange(self, name: str, kind: ExchangeKind, durable: bool) -> None:
        await self._call(
            self.transport.declare_exchange(name, kind, durable), ("declaring exchange %r", name)
        )

    async def check_exchange(self, name: str) -> None:
        await self._call(self.transport.check_exchange(name), ("checking exchange %r", name))

    async def delete_exchange(self, name: str) -> None:
        await self._call(self.transport.delete_exchange(name), ("deleting exchange %r", name))

    async def bind(self, queue: str, exchange: str, key: str) -> None:
        await self._call(
            self.transport.bind(queue, exchange, key),
            ("binding queue %r to exchange %r", queue, exchange),
        )

    # -- messages ---------------------------------------------------------------------------

    async def publish(
        self, exchange: str, key: str, envelope: Envelope, *, mandatory: bool = False
    ) -> None:
        await self._call(
            self.transport.publish(exchange, key, envelope, mandatory=mandatory),
            _publishing(exchange, key),
            PublishFailed,
        )

    async def publish_unconfirmed(self, exchange: str, key: str, envelope: Envelope) -> None:
        await self._call(
            self.transport.publish_unconfirmed(exchange, key, envelope),
            _publishing(exchange, key),
            PublishFailed,
        )

    async def publish_many(
        self, exchange: str, items: Sequence[tuple[str, Envelope]], *, mandatory: bool = False
    ) -> None:
        if items:
            await self._call(
                self.transport.publish_many(exchange, items, mandatory=mandatory),
                _publishing(exchange, items[0][0], len(items)),
                PublishFailed,
            )

    async def consume(
        self, queue: str, deliver: DeliverCallback, *, prefetch: int, auto_ack: bool
    ) -> str:
        return await self._call(
            self.transport.consume(queue, deliver, prefetch=prefetch, auto_ack=auto_ack),
            ("consuming queue %r", queue),
        )

    async def cancel(self, consumer_tag: str) -> None:
        await self._call(
            self.transport.cancel(consumer_tag), ("cancelling consumer %r", consumer_tag)
        )

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        await self._call(
            self.transport.nack(delivery, requeue=requeue),
            ("settling a message of %r", delivery.routing_key),
        )


def _publishing(exchange: str, key: str, count: int = 1) -> Doing:
    what = "a message" if count == 1 else f"{count} messages"
    if exchange:
        return ("publishing %s to exchange %r with key %r", what, exchange, key)
    return ("sending %s to queue %r", what, key)


def _text(doing: Doing) -> str:
    return doing[0] % doing[1:]
