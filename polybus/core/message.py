"""Received messages: what the patterns hand to application code.

``BaseMessage`` holds the body and properties; the asyncio API's ``AsyncMessage`` settles with
``await msg.ack()`` through the ``Settler`` (its subscription) that received it, at most once.
The blocking API's ``Message`` (``polybus.blocking.message``) is the same with plain calls. A
worker's handler gets a message that is already settled: the worker settles it.
"""

from __future__ import annotations

from typing import Any, Protocol

from polybus.core.codecs import decode_body
from polybus.core.transport import Delivery

_UNSET: Any = object()


class Settler(Protocol):
    """Where a message's ack/nack go (its subscription)."""

    async def settle(self, delivery: Delivery, outcome: str) -> None: ...


class BaseMessage:
    """A delivered message: body (decoded by content type), raw bytes and properties."""

    __slots__ = ("_body", "_delivery", "_settler", "settled")

    def __init__(self, delivery: Delivery, settler: Any) -> None:
        self._delivery = delivery
        self._settler = settler
        self._body: Any = _UNSET
        self.settled = settler is None

    @property
    def body(self) -> Any:
        """The decoded body: bytes, str, or the value the codec encoded."""
        if self._body is _UNSET:
            envelope = self._delivery.envelope
            self._body = decode_body(envelope.body, envelope.content_type)
        return self._body

    @property
    def data(self) -> bytes:
        """The body exactly as it travelled."""
        return self._delivery.envelope.body

    @property
    def content_type(self) -> str:
        return self._delivery.envelope.content_type

    @property
    def headers(self) -> dict[str, Any]:
        return self._delivery.envelope.headers

    @property
    def key(self) -> str:
        """The routing key it was published with (the queue name for a work-queue send)."""
        return self._delivery.routing_key

    @property
    def exchange(self) -> str:
        return self._delivery.exchange

    @property
    def message_id(self) -> str | None:
        return self._delivery.envelope.message_id

    @property
    def correlation_id(self) -> str | None:
        return self._delivery.envelope.correlation_id

    @property
    def reply_to(self) -> str | None:
        return self._delivery.envelope.reply_to

    @property
    def timestamp(self) -> float | None:
        """Seconds since the epoch, when it was sent."""
        return self._delivery.envelope.timestamp

    @property
    def priority(self) -> int | None:
        return self._delivery.envelope.priority

    @property
    def expiration(self) -> float | None:
        """The time-to-live, in seconds, it was sent with."""
        return self._delivery.envelope.expiration

    @property
    def persistent(self) -> bool:
        return self._delivery.envelope.persistent

    @property
    def redelivered(self) -> bool:
        """True when it was delivered before and not acked (its consumer died or nacked it)."""
        return self._delivery.redelivered

    @property
    def delivery_count(self) -> int:
        """1 on the first delivery, then one more on each redelivery."""
        return self._delivery.delivery_count

    def _claim(self) -> Any:
        if self.settled or self._settler is None:
            return None
        self.settled = True
        return self._settler

    def __repr__(self) -> str:
        return f"<{type(self).__name__} key={self.key!r} body={self.data[:60]!r}>"


class AsyncMessage(BaseMessage):
    """A message of the asyncio API."""

    __slots__ = ()

    async def ack(self) -> None:
        """Remove it from its queue. Settling twice is a no-op."""
        settler = self._claim()
        if settler is not None:
            await settler.settle(self._delivery, "ack")

    async def nack(self, requeue: bool = True) -> None:
        """Put it back (``requeue``) or drop it / move it to the dead-letter queue."""
        settler = self._claim()
        if settler is not None:
            await settler.settle(self._delivery, "requeue" if requeue else "reject")

    async def reject(self) -> None:
        """Drop it, or move it to the queue's dead-letter queue."""
        await self.nack(requeue=False)


class PeekedMessage(BaseMessage):
    """A message read without consuming it (``peek``): it stays in its queue, so there is
    nothing to settle."""

    __slots__ = ()

    def __init__(self, delivery: Delivery) -> None:
        super().__init__(delivery, None)
