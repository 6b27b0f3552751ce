"""Pipelined publisher confirms on one channel.

Every publish gets the channel's next delivery tag and a future; the broker's acks and nacks
(``multiple`` covering every tag up to theirs) settle the futures, so any number of publishes are
in flight at once. A ``mandatory`` message the broker returns is matched to its publish by what
the return carries (exchange, key, message id, body) and fails with ``Unroutable`` when its ack
arrives — RabbitMQ sends the return before that ack. A nacked message was not stored; it is
sent again a few times (it may then arrive after messages published later) before the publish
raises ``PublishFailed``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pika
import pika.frame
import pika.spec
from pika.adapters.asyncio_connection import AsyncioConnection

from polybus.core.errors import PublishFailed, Unroutable
from polybus.transports.rabbitmq._channel import AmqpChannel, lost_connection
from polybus.transports.rabbitmq._convert import translate

# A nack means the broker did not store the message (e.g. a quorum queue without a leader for a
# moment, as just after several connections declared it at once): it is sent again this many
# times, with a doubling pause (0.1 s up to 3.2 s, 6.3 s in all), before ``PublishFailed``.
NACK_RETRIES = 6


class Pending:
    """A publish awaiting its confirm; kept whole so it can be sent again after a reconnect."""

    __slots__ = (
        "body",
        "exchange",
        "future",
        "key",
        "mandatory",
        "nacks",
        "properties",
        "refusals",
        "returned",
    )

    def __init__(
        self,
        exchange: str,
        key: str,
        body: bytes,
        properties: pika.BasicProperties,
        mandatory: bool,
        future: asyncio.Future[None],
    ) -> None:
        self.exchange = exchange
        self.key = key
        self.body = body
        self.properties = properties
        self.mandatory = mandatory
        self.future = future
        self.returned = False
        self.nacks = 0
        self.refusals = 0  # connections the broker closed with an error while it was in flight

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def confirm(self, nacked: bool) -> None:
        if self.future.done():
            return
        if nacked:
            self.future.set_exception(
                PublishFailed(
                    f"RabbitMQ refused the message to {self.exchange or 'the default exchange'!r}"
                    f" with key {self.key!r} (nack); it was not stored"
                )
            )
        elif self.returned:
            self.future.set_exception(
                Unroutable(
                    f"no queue is bound to exchange {self.exchange!r} for key {self.key!r}; "
                    "the message was not delivered"
                )
            )
        else:
            self.future.set_result(None)


class Publisher:
    """The confirm-mode channel. ``on_lost`` receives the unconfirmed publishes and the reason
    when the connection goes away (to send again after reconnecting); any other closure fails
    them."""

    def __init__(
        self,
        on_lost: Callable[[list[Pending], BaseException], None],
        on_nack: Callable[[Pending], None],
    ) -> None:
        self._on_lost = on_lost
        self._on_nack = on_nack
        self._channel: AmqpChannel | None = None
        self._pending: dict[int, Pending] = {}
        self._mandatory: dict[int, Pending] = {}
        self._next_tag = 1
        self._lowest = 1

    @property
    def is_open(self) -> bool:
        return self._channel is not None and self._channel.is_open

    async def open(self, connection: AsyncioConnection) -> None:
        channel = await AmqpChannel.open(connection, "opening a publishing channel", self._closed)
        await channel.call(
            "enabling publisher confirms", channel.channel.confirm_delivery, self._on_confirm
        )
        channel.channel.add_on_return_callback(self._on_return)
        self._channel = channel

    def send(self, item: Pending) -> None:
        """Write the message to the channel; its future settles on the broker's confirm."""
        channel = self._channel
        assert channel is not None, "open() first"
        try:
            channel.channel.basic_publish(
                item.exchange, item.key, item.body, item.properties, item.mandatory
            )
        except Exception as exc:
            doing = f"publishing to {item.exchange!r} with key {item.key!r}"
            raise translate(exc, doing, PublishFailed) from exc
        tag = self._next_tag
        self._next_tag = tag + 1
        self._pending[tag] = item
        if item.mandatory:
            self._mandatory[tag] = item

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        nacked = isinstance(method, pika.spec.Basic.Nack)
        tag: int = method.delivery_tag
        pending, mandatory = self._pending, self._mandatory
        if method.multiple:
            tags: range | tuple[int] = range(self._lowest, tag + 1)
            self._lowest = max(self._lowest, tag + 1)
        else:
            tags = (tag,)
        for confirmed in tags:
            item = pending.pop(confirmed, None)
            if item is not None:
                if item.mandatory:
                    del mandatory[confirmed]
                if nacked and item.nacks < NACK_RETRIES and not item.future.done():
                    item.nacks += 1
                    self._on_nack(item)
                else:
                    item.confirm(nacked)

    def _on_return(
        self,
        _channel: pika.channel.Channel,
        method: pika.spec.Basic.Return,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        for item in self._mandatory.values():
            if (
                not item.returned
                and item.exchange == method.exchange
                and item.key == method.routing_key
                and item.properties.message_id == properties.message_id
                and item.body == body
            ):
                item.returned = True
                return

    def _closed(self, _channel: AmqpChannel, reason: BaseException) -> None:
        unconfirmed = list(self._pending.values())
        self._pending.clear()
        self._mandatory.clear()
        if lost_connection(reason):
            self._on_lost(unconfirmed, reason)
            return
        error = translate(reason, "publishing", PublishFailed)
        for item in unconfirmed:
            item.fail(error)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
