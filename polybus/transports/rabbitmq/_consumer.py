"""A consumer on its own channel, so that ``basic_qos`` prefetch is per consumer.

A delivery's tag remembers the channel it came on: an ack must go back on that channel, and a
delivery from a channel that has since closed was already returned to its queue by the broker, so
settling it is a no-op (at-least-once, as after a crash). After ``cancel`` the channel stays open
until the consumer's unacked messages are settled, then closes.
"""

from __future__ import annotations

from collections.abc import Callable

import pika
import pika.channel
import pika.exceptions
import pika.spec
from pika.adapters.asyncio_connection import AsyncioConnection

from polybus.core.errors import ConnectionFailed
from polybus.core.transport import DeliverCallback, Delivery
from polybus.transports.rabbitmq._channel import AmqpChannel, lost_connection
from polybus.transports.rabbitmq._convert import to_envelope


class Consumer:
    """One ``basic.consume``; ``start`` again on a new connection to resume it."""

    def __init__(
        self,
        tag: str,
        queue: str,
        deliver: DeliverCallback,
        prefetch: int,
        auto_ack: bool,
        on_gone: Callable[[Consumer, bool], None],
        connection: Callable[[], AsyncioConnection | None],
    ) -> None:
        self.tag = tag
        self.queue = queue
        self.deliver = deliver
        self.prefetch = prefetch
        self.auto_ack = auto_ack
        self.cancelled = False
        self._on_gone = on_gone
        self._connection = connection
        self._channel: AmqpChannel | None = None
        self._unacked = 0
        self._consuming = False  # basic.consume succeeded on ``_channel``

    async def resume(self) -> None:
        """Start again on the transport's connection as it is now (after a reconnect)."""
        connection = self._connection()
        if connection is None:
            raise ConnectionFailed(f"consuming {self.queue!r}: not connected")
        await self.start(connection)

    async def start(self, connection: AsyncioConnection) -> None:
        doing = f"consuming {self.queue!r}"
        channel = await AmqpChannel.open(connection, doing, self._closed)
        self._channel = channel
        self._unacked = 0
        self._consuming = False
        try:
            if not self.auto_ack:
                await channel.call(doing, channel.channel.basic_qos, prefetch_count=self.prefetch)
            channel.channel.add_on_cancel_callback(lambda _frame: self._cancelled_by_broker())
            await channel.call(
                doing,
                channel.channel.basic_consume,
                self.queue,
                self._receiver(channel),
                auto_ack=self.auto_ack,
                consumer_tag=self.tag,
            )
        except BaseException:
            channel.close()
            raise
        self._consuming = True

    def _receiver(
        self, channel: AmqpChannel
    ) -> Callable[
        [pika.channel.Channel, pika.spec.Basic.Deliver, pika.BasicProperties, bytes], None
    ]:
        deliver, tag, counted = self.deliver, self.tag, not self.auto_ack

        def on_message(
            _channel: pika.channel.Channel,
            method: pika.spec.Basic.Deliver,
            properties: pika.BasicProperties,
            body: bytes,
        ) -> None:
            envelope, previous, defect = to_envelope(properties, body)
            redelivered: bool = method.redelivered
            count = previous + 1 if previous else 2 if redelivered else 1
            if counted:
                self._unacked += 1
            deliver(
                Delivery(
                    envelope,
                    method.exchange,
                    method.routing_key,
                    redelivered,
                    count,
                    (self, channel, method.delivery_tag),
                    tag,
                    defect,
                )
            )

        return on_message

    def settle(self, channel: AmqpChannel, delivery_tag: int, outcome: str) -> None:
        """Ack (``ack``), requeue (``requeue``) or reject (``reject``) one delivery."""
        if channel.is_open:
            if outcome == "ack":
                channel.channel.basic_ack(delivery_tag)
            else:
                channel.channel.basic_nack(delivery_tag, requeue=outcome == "requeue")
        if channel is self._channel:
            self._unacked -= 1
            if self.cancelled and self._unacked <= 0:
                channel.close()

    async def cancel(self) -> None:
        """Stop deliveries; deliveries written before the broker's cancel-ok arrive first."""
        self.cancelled = True
        channel = self._channel
        if channel is None or not channel.is_open:
            return
        await channel.call(
            f"cancelling the consumer of {self.queue!r}", channel.channel.basic_cancel, self.tag
        )
        if self.auto_ack or self._unacked <= 0:
            channel.close()

    def _cancelled_by_broker(self) -> None:
        """The queue was deleted: the consumer is gone for good."""
        self.cancelled = True
        self._on_gone(self, False)
        if self._channel is not None and self._unacked <= 0:
            self._channel.close()

    def _closed(self, channel: AmqpChannel, reason: BaseException) -> None:
        if (
            channel is not self._channel
            or not self._consuming
            or self.cancelled
            or lost_connection(reason)  # recovered for every consumer at once
            or isinstance(reason, pika.exceptions.ChannelClosedByClient)
        ):
            return
        self._on_gone(self, True)  # the broker closed this channel: resume on a new one
