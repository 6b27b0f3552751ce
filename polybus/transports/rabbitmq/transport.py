"""``amqp://`` / ``amqps://``: RabbitMQ through pika's asyncio adapter, on the bus's loop.

Channels: a small pool for declarations and queries (a broker error closes only the channel of the
operation that caused it, and the pool replaces it), one confirm-mode channel for publishing, and
one channel per consumer (``basic_qos`` prefetch is per channel).

Recovery: when the connection drops, every operation waits (up to ``reconnect_timeout``) while the
transport reconnects with backoff, declares again the exchanges, queues and bindings it declared,
resumes its consumers under the same tags and sends again the publishes that were not confirmed
(at-least-once: the broker may have stored some of them already).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

import pika
from pika.adapters.asyncio_connection import AsyncioConnection

from polybus.core.errors import (
    CapabilityMissing,
    Closed,
    ConnectionFailed,
    PolybusError,
    PublishFailed,
    Unroutable,
)
from polybus.core.transport import (
    Capabilities,
    DeliverCallback,
    Delivery,
    Envelope,
    ExchangeKind,
    QueueOptions,
    QueueStats,
    Transport,
)
from polybus.core.url import BrokerURL
from polybus.transports.kit import Topology
from polybus.transports.rabbitmq._channel import AmqpChannel, broker_error
from polybus.transports.rabbitmq._connection import CoalescingConnection
from polybus.transports.rabbitmq._consumer import Consumer
from polybus.transports.rabbitmq._convert import (
    URL_OPTIONS,
    queue_arguments,
    settings_from_url,
    to_properties,
    translate,
    why_not_connected,
)
from polybus.transports.rabbitmq._delays import (
    DELAY_HEADER,
    REDECLARE,
    delay_exchange,
    delay_queue,
    delay_queue_arguments,
    level_ms,
)
from polybus.transports.rabbitmq._publisher import Pending, Publisher

log = logging.getLogger("polybus.rabbitmq")

# pika logs every step of a connection (about twenty INFO lines per connect) and every failure
# it hands back to polybus with a traceback; polybus says what happened, once, in its own
# words. So pika's log is quiet unless the application asked for it (set its level itself).
if logging.getLogger("pika").level == logging.NOTSET:
    logging.getLogger("pika").setLevel(logging.CRITICAL)

State = Literal["new", "open", "recovering", "closed"]
NO_LISTING = (
    "AMQP 0-9-1 cannot list queues (RabbitMQ's management plugin can; polybus does not use"
    " it): name the queues"
)
NO_PEEK = (
    "AMQP 0-9-1 reads a queue only by consuming it, and a message taken and put back is marked"
    " redelivered and counted as a delivery: it cannot read a queue without consuming it"
    " (dead letters are still replayed and discarded)"
)
MAX_BACKOFF = 2.0
REFUSALS = 2  # connections the broker may close with an error over one publish before it fails


CONFIRM_SHARE = 0.9
"""Of ``operation_timeout``, how long a publish waits for its confirm before the transport
gives up on its channel (the rest of the bound is the core's, which then raises)."""


class RabbitMQTransport(Transport):
    """RabbitMQ's own queues, exchanges and bindings; confirms pipelined; recovery built in."""

    url_options = URL_OPTIONS

    @classmethod
    def takes_several_hosts(cls, url: BrokerURL) -> bool:
        return True  # the nodes of a cluster, tried in turn

    @classmethod
    def capabilities_for(cls, url: BrokerURL) -> Capabilities:
        if url.settings["queue_type"] == "classic":
            return Capabilities(
                persistence=True,
                priority=True,
                ttl=True,
                dead_letter=True,
                mandatory=True,
                delay=True,
                reason="queue_type=classic: classic queues only flag a redelivery, they do not "
                f"count deliveries; {NO_LISTING}; {NO_PEEK}",
            )
        return Capabilities(
            persistence=True,
            priority=True,
            ttl=True,
            dead_letter=True,
            delivery_count=True,
            mandatory=True,
            delay=True,
            reason="delivery counts are exact on quorum queues (durable, shared, no priorities);"
            f" on classic queues a redelivery reports 2; {NO_LISTING}; {NO_PEEK}",
        )

    def __init__(self, url: BrokerURL) -> None:
        super().__init__(url)
        self.settings = settings_from_url(self.url)
        self._state: State = "new"
        # the node (of settings.nodes) to try first: connections spread over a cluster
        self._node = random.randrange(len(self.settings.nodes))
        self._confirm_wait = self.url.settings["operation_timeout"] * CONFIRM_SHARE
        self._connection: AsyncioConnection | None = None
        self._ready = asyncio.Event()
        self._closed_waiter: asyncio.Future[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._idle: list[AmqpChannel] = []
        self._publisher: Publisher | None = None
        self._publisher_lock = asyncio.Lock()
        self._unconfirmed: AmqpChannel | None = None  # for publish_unconfirmed
        self._unsent: list[Pending] = []  # unconfirmed when the connection dropped
        self._topology = Topology()
        self._delay_exchange = delay_exchange(self.url.settings["namespace"])
        self._delay_queues: dict[str, float] = {}  # when this transport last declared each
        self._resuming: set[asyncio.Task[None]] = set()
        self._tags = itertools.count(1)
        self._tag_prefix = f"polybus-{os.urandom(4).hex()}"

    # -- connection lifecycle ---------------------------------------------------------------

    async def connect(self) -> None:
        if self._state == "open":
            return
        if self._state == "closed":
            raise Closed("the RabbitMQ transport is closed; create a new one")
        await self._open()
        self._state = "open"
        self._ready.set()

    async def _open(self) -> None:
        """Connect to the first node that answers, from the one after the last connected to
        (a cluster's nodes in turn: after a loss, the others first).

        :raises ConnectionFailed: no node answered, saying why for each.
        """
        nodes = self.settings.nodes
        failures = []
        for turn in range(len(nodes)):
            index = (self._node + turn) % len(nodes)
            try:
                self._connection = await self._open_node(nodes[index])
            except ConnectionFailed as exc:
                failures.append(str(exc))
                continue
            self._node = (index + 1) % len(nodes)
            self._idle = []
            self._publisher = None
            self._unconfirmed = None
            return
        if len(failures) == 1:
            raise ConnectionFailed(failures[0])
        raise ConnectionFailed(
            f"no node of RabbitMQ at {self.url.redacted()} answered: {'; '.join(failures)}"
        )

    async def _open_node(self, node: pika.ConnectionParameters) -> AsyncioConnection:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[AsyncioConnection] = loop.create_future()
        host = f"{node.host}:{node.port}"
        where = self.url.redacted() if len(self.settings.nodes) == 1 else host

        def on_open(connection: AsyncioConnection) -> None:
            if not opened.done():
                opened.set_result(connection)

        def on_open_error(_connection: AsyncioConnection, exc: BaseException) -> None:
            if not opened.done():
                why = why_not_connected(exc, host, node.virtual_host)
                opened.set_exception(
                    ConnectionFailed(f"cannot connect to RabbitMQ at {where}: {why}")
                )

        try:
            connection = CoalescingConnection(
                node,
                on_open,
                on_open_error,
                self._on_connection_closed,
                custom_ioloop=loop,
            )
        except Exception as exc:
            raise ConnectionFailed(f"cannot connect to RabbitMQ at {where}: {exc!r}") from exc
        try:
            return await asyncio.wait_for(opened, self.settings.connect_timeout + 1)
        except asyncio.TimeoutError:
            with contextlib.suppress(Exception):  # pika refuses to close what never opened
                connection.close()
            raise ConnectionFailed(
                f"RabbitMQ at {where} did not answer within {self.settings.connect_timeout}s"
            ) from None

    def _on_connection_closed(self, connection: AsyncioConnection, reason: BaseException) -> None:
        if connection is not self._connection:
            return
        self._connection = None
        self._ready.clear()
        if self._closed_waiter is not None and not self._closed_waiter.done():
            self._closed_waiter.set_result(None)
        if self._state != "open":
            return  # closing, aborted, or already recovering (its loop sees the failure)
        log.warning("lost the connection to %s (%r); reconnecting", self.url.redacted(), reason)
        self._state = "recovering"
        self._recovery = asyncio.ensure_future(self._recover())

    async def _recover(self) -> None:
        delay = 0.1
        give_up_at = time.monotonic() + self.settings.reconnect_timeout
        while self._state == "recovering":
            try:
                await self._open()
                await self._restore()
            except PolybusError as exc:
                if self._connection is not None:
                    self._connection.close()
                    self._connection = None
                log.info("reconnecting to %s failed (%s); retrying", self.url.redacted(), exc)
                if time.monotonic() > give_up_at:  # publishers waiting for confirms: raise
                    self._fail_unsent(
                        ConnectionFailed(
                            f"the connection to {self.url.redacted()} was lost before the broker"
                            " confirmed the message, and has not come back"
                        )
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            if self._state == "recovering":
                self._state = "open"
                self._ready.set()
                log.warning("reconnected to %s", self.url.redacted())

    async def _restore(self) -> None:
        """Declare again what this transport declared, resume consumers, resend publishes.

        :raises ConnectionFailed: the connection was lost again (anything else is logged, so
            that the rest is still restored).
        """

        async def binding(queue: str, exchange: str, key: str) -> None:
            await self._bind(queue, exchange, key, wait=False)

        await self._topology.replay(
            exchange=self._declare_exchange,
            queue=self._declare_queue,
            binding=binding,
            where=self.url.redacted(),
        )
        publisher = await self._get_publisher(wait=False)
        unsent, self._unsent = self._unsent, []
        for item in unsent:
            publisher.send(item)

    async def close(self) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        self._ready.clear()
        if self._recovery is not None:
            self._recovery.cancel()
        connection = self._connection
        if connection is not None and (connection.is_open or connection.is_opening):
            self._closed_waiter = asyncio.get_running_loop().create_future()
            connection.close()
            try:
                await asyncio.wait_for(self._closed_waiter, self.settings.connect_timeout)
            except asyncio.TimeoutError:
                log.warning("RabbitMQ did not confirm closing the connection; dropped it")
        self._connection = None
        self._fail_unsent(Closed("the RabbitMQ transport closed before the broker confirmed"))

    async def abort(self) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        self._ready.clear()
        if self._recovery is not None:
            self._recovery.cancel()
        connection = self._connection
        if connection is not None and connection.is_open:
            self._closed_waiter = asyncio.get_running_loop().create_future()
            # drop the TCP stream without AMQP's goodbye, as a crashed process would
            connection._terminate_stream(ConnectionAbortedError("polybus: abort()"))
            await asyncio.wait_for(self._closed_waiter, self.settings.connect_timeout)
        self._connection = None
        self._fail_unsent(Closed("the RabbitMQ transport was aborted"))

    def _fail_unsent(self, error: PolybusError) -> None:
        unsent, self._unsent = self._unsent, []
        for item in unsent:
            item.fail(error)

    async def _live(self) -> AsyncioConnection:
        """The open connection, waiting for a recovery in progress."""
        connection = self._connection
        if self._state == "open" and connection is not None:
            return connection
        if self._state == "closed":
            raise Closed(f"the RabbitMQ transport for {self.url.redacted()} is closed")
        if self._state == "new":
            raise Closed("the RabbitMQ transport is not connected yet")
        timeout = self.settings.reconnect_timeout
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            raise ConnectionFailed(
                f"the connection to {self.url.redacted()} was lost and did not come back "
                f"within {timeout}s"
            ) from None
        return await self._live()

    # -- channels ---------------------------------------------------------------------------

    async def _on_channel(
        self, doing: str, use: Callable[[AmqpChannel], Awaitable[Any]], *, wait: bool = True
    ) -> Any:
        """Run ``use`` on a pooled channel; a channel the broker closed is not returned."""
        if wait:
            connection = await self._live()
        elif self._connection is not None:
            connection = self._connection
        else:
            raise ConnectionFailed(f"{doing}: not connected")
        channel = self._idle.pop() if self._idle else await AmqpChannel.open(connection, doing)
        try:
            return await use(channel)
        finally:
            if channel.is_open and channel.connection is self._connection:
                self._idle.append(channel)

    async def _get_publisher(self, wait: bool = True) -> Publisher:
        publisher = self._publisher
        if publisher is not None and publisher.is_open:
            return publisher
        # wait for a recovery outside the lock: the recovery itself takes the lock
        connection = await self._live() if wait else self._connection
        async with self._publisher_lock:
            publisher = self._publisher
            if publisher is None or not publisher.is_open:
                if connection is None or connection is not self._connection:
                    raise ConnectionFailed("opening a publishing channel: the connection was lost")
                publisher = Publisher(self._on_publishes_lost, self._on_nacked)
                await publisher.open(connection)
                self._publisher = publisher
            return publisher

    def _on_nacked(self, item: Pending) -> None:
        """Send a nacked message again after a pause (``NACK_RETRIES`` times at most)."""
        asyncio.get_running_loop().call_later(0.1 * 2 ** (item.nacks - 1), self._resend, item)

    def _resend(self, item: Pending) -> None:
        publisher = self._publisher
        if item.future.done():
            return
        if publisher is None or not publisher.is_open:
            self._unsent.append(item)  # sent with the rest once the connection is back
            return
        try:
            publisher.send(item)
        except PolybusError as exc:
            item.fail(exc)

    def _on_publishes_lost(self, unconfirmed: list[Pending], reason: BaseException) -> None:
        """Keep the publishes the connection took with it, to send them again once it is back
        — but not a message the broker keeps closing the connection over (a frame it cannot
        parse): sending it again would drop the connection again, for ever."""
        if self._state == "closed":
            error = Closed("the RabbitMQ transport closed before the broker confirmed")
            for item in unconfirmed:
                item.fail(error)
            return
        refused = broker_error(reason)
        for item in unconfirmed:
            if refused is not None:
                item.refusals += 1
            if item.refusals >= REFUSALS:
                item.fail(
                    PublishFailed(
                        f"RabbitMQ closed the connection ({refused}) each of the {REFUSALS}"
                        f" times this message to {item.exchange or item.key!r} was in flight;"
                        " it is not sent again"
                    )
                )
            else:
                self._unsent.append(item)

    # -- queues and exchanges ---------------------------------------------------------------

    async def declare_queue(self, name: str, options: QueueOptions) -> None:
        await self._declare_queue(name, options, wait=True)
        self._topology.queue_declared(name, options)

    async def _declare_queue(self, name: str, options: QueueOptions, wait: bool = False) -> None:
        arguments = queue_arguments(options, self.settings.queue_type, self.settings.quorum_size)
        await self._on_channel(
            f"declaring queue {name!r}",
            lambda ch: ch.call(
                f"declaring queue {name!r}",
                ch.channel.queue_declare,
                name,
                durable=options.durable,
                exclusive=options.exclusive,
                auto_delete=options.auto_delete,
                arguments=arguments,
            ),
            wait=wait,
        )

    async def delete_queue(self, name: str) -> None:
        doing = f"deleting queue {name!r}"
        await self._on_channel(doing, lambda ch: ch.call(doing, ch.channel.queue_delete, name))
        self._topology.queue_deleted(name)

    async def purge_queue(self, name: str) -> int:
        doing = f"purging queue {name!r}"
        frame = await self._on_channel(
            doing, lambda ch: ch.call(doing, ch.channel.queue_purge, name)
        )
        count: int = frame.method.message_count
        return count

    async def queue_size(self, name: str) -> int:
        return (await self.queue_stats(name)).ready

    async def queue_stats(self, name: str) -> QueueStats:
        """Ready messages and consumers, as a passive ``queue.declare`` answers; AMQP does
        not say how many are unacked (the management plugin would)."""
        doing = f"counting the messages of queue {name!r}"
        frame = await self._on_channel(
            doing, lambda ch: ch.call(doing, ch.channel.queue_declare, name, passive=True)
        )
        method = frame.method
        return QueueStats(name, int(method.message_count), None, int(method.consumer_count))

    async def queue_names(self) -> list[str]:
        raise CapabilityMissing(NO_LISTING)

    async def peek(self, name: str, limit: int) -> list[Delivery]:
        raise CapabilityMissing(NO_PEEK)

    async def declare_exchange(self, name: str, kind: ExchangeKind, durable: bool) -> None:
        await self._declare_exchange(name, kind, durable, wait=True)
        self._topology.exchange_declared(name, kind, durable)

    async def _declare_exchange(
        self, name: str, kind: ExchangeKind, durable: bool, wait: bool = False
    ) -> None:
        doing = f"declaring {kind.value} exchange {name!r}"
        await self._on_channel(
            doing,
            lambda ch: ch.call(
                doing, ch.channel.exchange_declare, name, kind.value, durable=durable
            ),
            wait=wait,
        )

    async def check_exchange(self, name: str) -> None:
        doing = f"checking that exchange {name!r} exists"
        await self._on_channel(
            doing,
            lambda ch: ch.call(doing, ch.channel.exchange_declare, name, "direct", passive=True),
        )

    async def delete_exchange(self, name: str) -> None:
        doing = f"deleting exchange {name!r}"
        await self._on_channel(doing, lambda ch: ch.call(doing, ch.channel.exchange_delete, name))
        self._topology.exchange_deleted(name)

    async def bind(self, queue: str, exchange: str, key: str) -> None:
        await self._bind(queue, exchange, key, wait=True)
        self._topology.bound(queue, exchange, key)

    async def _bind(self, queue: str, exchange: str, key: str, *, wait: bool) -> None:
        doing = f"binding queue {queue!r} to exchange {exchange!r} with key {key!r}"
        await self._on_channel(
            doing,
            lambda ch: ch.call(doing, ch.channel.queue_bind, queue, exchange, routing_key=key),
            wait=wait,
        )

    # -- messages ---------------------------------------------------------------------------

    async def publish(
        self, exchange: str, key: str, envelope: Envelope, *, mandatory: bool = False
    ) -> None:
        if envelope.delay is not None:
            await self._publish_delayed(exchange, key, envelope)
            return
        await self._publish_confirmed(exchange, key, envelope, mandatory)

    async def _publish_confirmed(
        self, exchange: str, key: str, envelope: Envelope, mandatory: bool
    ) -> None:
        publisher = await self._get_publisher()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        item = Pending(exchange, key, envelope.body, to_properties(envelope), mandatory, future)
        publisher.send(item)
        await self._confirmed(publisher, [future])

    async def _publish_delayed(self, exchange: str, key: str, envelope: Envelope) -> None:
        """Through the delay queue of its level (``_delays``), declared on first use; sent
        mandatory, so a delay queue deleted since is declared again, never a silent loss."""
        assert envelope.delay is not None
        if exchange:
            await self.check_exchange(exchange)  # NotFound now, as for any publish
        level = level_ms(envelope.delay)
        queue = delay_queue(self.url.settings["namespace"], exchange, level)
        waiting = replace(envelope, headers={**envelope.headers, DELAY_HEADER: queue}, delay=None)
        for attempt in (1, 2):
            declared = self._delay_queues.get(queue)
            if declared is None or time.monotonic() - declared > REDECLARE:
                await self._declare_delay_queue(queue, exchange, level)
            try:
                await self._publish_confirmed(self._delay_exchange, key, waiting, True)
                return
            except Unroutable:
                self._delay_queues.pop(queue, None)
                if attempt == 2:
                    raise PublishFailed(
                        f"delay queue {queue!r} took no message though just declared"
                    ) from None

    async def _declare_delay_queue(self, queue: str, exchange: str, level: int) -> None:
        doing = f"declaring delay queue {queue!r}"
        delays = self._delay_exchange
        arguments = delay_queue_arguments(exchange, level)

        async def declare(ch: AmqpChannel) -> None:
            await ch.call(
                doing,
                ch.channel.exchange_declare,
                delays,
                "headers",
                durable=True,
                auto_delete=True,  # with its last delay queue
            )
            await ch.call(doing, ch.channel.queue_declare, queue, durable=True, arguments=arguments)
            await ch.call(
                doing,
                ch.channel.queue_bind,
                queue,
                delays,
                arguments={"x-match": "all", DELAY_HEADER: queue},
            )

        await self._on_channel(doing, declare)
        self._delay_queues[queue] = time.monotonic()  # its expiry timer starts again

    async def publish_unconfirmed(self, exchange: str, key: str, envelope: Envelope) -> None:
        """On a channel without confirms: no ack frame to wait for and read."""
        doing = f"publishing to {exchange!r} with key {key!r}"
        channel = self._unconfirmed
        if channel is None or not channel.is_open:
            channel = await AmqpChannel.open(await self._live(), doing)
            self._unconfirmed = channel
        try:
            channel.channel.basic_publish(exchange, key, envelope.body, to_properties(envelope))
        except Exception as exc:
            raise translate(exc, doing, PublishFailed) from exc

    async def publish_many(
        self, exchange: str, items: Sequence[tuple[str, Envelope]], *, mandatory: bool = False
    ) -> None:
        publisher = await self._get_publisher()
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for key, envelope in items:
            future: asyncio.Future[None] = loop.create_future()
            publisher.send(
                Pending(exchange, key, envelope.body, to_properties(envelope), mandatory, future)
            )
            futures.append(future)
        await self._confirmed(publisher, futures)

    async def _confirmed(self, publisher: Publisher, futures: list[asyncio.Future[None]]) -> None:
        """Wait for the broker's confirms, a little less than ``operation_timeout``.

        A channel that published to a quorum queue while its leader was being elected (a
        cluster node just lost) may never confirm anything again (seen on RabbitMQ 3.10):
        past the wait, the channel is replaced, so that the caller's next try goes through.
        """
        _done, waiting = await asyncio.wait(futures, timeout=self._confirm_wait)
        if waiting:
            for future in waiting:
                future.cancel()  # whatever the old channel says of them now goes unheard
            if publisher is self._publisher:
                self._publisher = None
                publisher.close()
            raise PublishFailed(
                f"RabbitMQ at {self.url.redacted()} did not confirm {len(waiting)} message(s)"
                f" within {self._confirm_wait:g}s; the outcome is unknown: they may or may not"
                " have been stored (the publishing channel was replaced)"
            )
        refusals = [future.exception() for future in futures]  # each read, none left unheard
        first = next((refusal for refusal in refusals if refusal is not None), None)
        if first is not None:
            raise first  # the first refusal (nack, unroutable), in publishing order

    async def consume(
        self, queue: str, deliver: DeliverCallback, *, prefetch: int, auto_ack: bool = False
    ) -> str:
        tag = f"{self._tag_prefix}-{next(self._tags)}"
        consumer = Consumer(
            tag, queue, deliver, prefetch, auto_ack, self._on_consumer_gone, self._current
        )
        await consumer.start(await self._live())
        self._topology.consuming(tag, consumer)
        return tag

    def _current(self) -> AsyncioConnection | None:
        """The connection as it is now (during a recovery: the one being restored)."""
        return self._connection

    def _on_consumer_gone(self, consumer: Consumer, resume: bool) -> None:
        """The broker cancelled a consumer (queue deleted) or closed its channel (resume it)."""
        if not resume:
            self._topology.cancelled(consumer.tag)
            return
        if self._state != "open" or self._connection is None:
            return
        task = asyncio.ensure_future(self._resume(consumer))
        self._resuming.add(task)
        task.add_done_callback(self._resuming.discard)

    async def _resume(self, consumer: Consumer) -> None:
        try:
            await consumer.start(await self._live())
        except PolybusError as exc:
            self._topology.cancelled(consumer.tag)
            log.error("consumer of %r stopped; could not resume it: %s", consumer.queue, exc)

    async def cancel(self, consumer_tag: str) -> None:
        consumer = self._topology.cancelled(consumer_tag)
        if isinstance(consumer, Consumer) and self._state == "open":
            await consumer.cancel()

    async def ack(self, delivery: Delivery) -> None:
        consumer, channel, tag = delivery.tag
        consumer.settle(channel, tag, "ack")

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        consumer, channel, tag = delivery.tag
        consumer.settle(channel, tag, "requeue" if requeue else "reject")


__all__ = ["RabbitMQTransport"]
