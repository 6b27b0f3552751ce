"""``memory://[name]``: an in-process broker with the full semantics of DESIGN.md.

Buses whose URLs name the same broker share it within the process, from any thread or event loop
(each connection's deliveries are handed to its own loop). ``MemoryBroker.restart()`` simulates a
broker restart — durable queues and persistent messages survive, the rest vanish, connections
reconnect and re-declare what they had — and ``MemoryTransport.abort()`` a crashed consumer.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

from polybus.core.conflicts import exchange_conflict, queue_conflict
from polybus.core.deadletters import EXPIRED, REJECTED, dead_letter_headers
from polybus.core.errors import Closed, DeclarationConflict, NotFound, Unroutable
from polybus.core.topic import topic_matches
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

_sequence = itertools.count()


class _Stored:
    """A message in a queue, with what the broker tracks about it."""

    __slots__ = ("deliveries", "envelope", "exchange", "expires_at", "routing_key", "seq")

    def __init__(
        self, envelope: Envelope, exchange: str, routing_key: str, ttl: float | None
    ) -> None:
        self.envelope = envelope
        self.exchange = exchange
        self.routing_key = routing_key
        self.deliveries = 0
        self.expires_at = time.monotonic() + ttl if ttl is not None else None
        self.seq = next(_sequence)


class _Queue:
    def __init__(self, name: str, options: QueueOptions, owner: _Connection | None) -> None:
        self.name = name
        self.options = options
        self.owner = owner
        levels = (options.max_priority or 0) + 1
        self.levels: list[deque[_Stored]] = [deque() for _ in range(levels)]
        self.highest_first = self.levels[::-1]
        self.consumers: list[_Consumer] = []
        self.next_consumer = 0
        self.had_consumer = False

    def push(self, stored: _Stored, front: bool = False) -> None:
        level = self.levels[self._level(stored)]
        if front:
            level.appendleft(stored)
        else:
            level.append(stored)

    def _level(self, stored: _Stored) -> int:
        if self.options.max_priority is None:
            return 0
        return max(0, min(stored.envelope.priority or 0, self.options.max_priority))

    def ready(self) -> int:
        return sum(len(level) for level in self.levels)

    def pop(self, broker: MemoryBroker) -> _Stored | None:
        """The next live message, highest priority first; expired heads are dead-lettered."""
        for level in self.highest_first:
            while level:
                stored = level.popleft()
                if stored.expires_at is not None and stored.expires_at <= time.monotonic():
                    broker.dead_letter(self, stored, EXPIRED)
                    continue
                return stored
        return None

    def expire_heads(self, broker: MemoryBroker) -> None:
        now = time.monotonic()
        for level in self.levels:
            while level and level[0].expires_at is not None and level[0].expires_at <= now:
                broker.dead_letter(self, level.popleft(), EXPIRED)

    def take_consumer(self) -> _Consumer | None:
        """The next consumer in round-robin order that may hold one more message."""
        count = len(self.consumers)
        if count == 1:
            only = self.consumers[0]
            return only if only.has_capacity() else None
        for step in range(count):
            consumer = self.consumers[(self.next_consumer + step) % count]
            if consumer.has_capacity():
                self.next_consumer = (self.next_consumer + step + 1) % count
                return consumer
        return None


@dataclass(eq=False)
class _Consumer:
    tag: str
    queue: _Queue
    connection: _Connection
    deliver: DeliverCallback
    prefetch: int
    auto_ack: bool
    unacked: dict[int, _Stored] = field(default_factory=dict)
    active: bool = True

    def has_capacity(self) -> bool:
        return self.auto_ack or self.prefetch <= 0 or len(self.unacked) < self.prefetch


@dataclass(eq=False)
class _Exchange:
    name: str
    kind: ExchangeKind
    durable: bool
    bindings: set[tuple[str, str]] = field(default_factory=set)  # (queue, key)

    def route(self, key: str) -> set[str]:
        if self.kind is ExchangeKind.FANOUT:
            return {queue for queue, _ in self.bindings}
        if self.kind is ExchangeKind.DIRECT:
            return {queue for queue, bound in self.bindings if bound == key}
        return {queue for queue, pattern in self.bindings if topic_matches(pattern, key)}


class _Clock:
    """The broker's timer, on a thread of its own while anything waits on it: delayed messages
    fall due whichever thread or loop published them, even once that loop is gone. ``at`` runs
    a call under the broker's lock once ``time.monotonic()`` reaches ``when``."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._wake = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def at(self, when: float, call: Callable[[], None]) -> None:
        with self._wake:
            heapq.heappush(self._due, (when, next(_sequence), call))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="polybus-memory-clock")
                self._thread.daemon = True
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._due:  # nothing waits: the thread ends, the next ``at`` starts one
                    self._thread = None
                    return
                wait = self._due[0][0] - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                _, _, call = heapq.heappop(self._due)
            with self._lock:
                call()


class _Delayed:
    """A message waiting for its time; ``key`` and ``exchange`` route it when it is due."""

    __slots__ = ("envelope", "exchange", "key")

    def __init__(self, exchange: str, key: str, envelope: Envelope) -> None:
        self.exchange = exchange
        self.key = key
        self.envelope = envelope


class _Connection:
    """One transport's link to the broker: its consumers and exclusive queues die with it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_lost: Callable[[], None]) -> None:
        self.loop = loop
        self.on_lost = on_lost
        self.consumers: dict[str, _Consumer] = {}
        self.alive = True

    def call(self, callback: DeliverCallback, delivery: Delivery) -> None:
        """Run a deliver callback on this connection's loop."""
        try:
            same_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            callback(delivery)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(callback, delivery)


class MemoryBroker:
    """The broker shared by every ``memory://name`` transport of one name in this process."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.RLock()
        self.queues: dict[str, _Queue] = {}
        self.exchanges: dict[str, _Exchange] = {}
        self.connections: set[_Connection] = set()
        self.clock = _Clock(self.lock)
        self.delayed: set[_Delayed] = set()

    # -- queues and exchanges ---------------------------------------------------------------

    def declare_queue(self, conn: _Connection, name: str, options: QueueOptions) -> None:
        with self.lock:
            queue = self.queues.get(name)
            if queue is None:
                self.queues[name] = _Queue(name, options, conn if options.exclusive else None)
                return
            if queue.owner is not None and queue.owner is not conn:
                raise DeclarationConflict(
                    f"queue {name!r} is exclusive to another connection; choose another name"
                )
            if queue.options != options:
                raise queue_conflict(name, asdict(queue.options), asdict(options))

    def delete_queue(self, name: str) -> None:
        with self.lock:
            queue = self.queues.pop(name, None)
            if queue is None:
                return
            for exchange in self.exchanges.values():
                exchange.bindings = {b for b in exchange.bindings if b[0] != name}
            for consumer in queue.consumers:
                consumer.active = False
                consumer.connection.consumers.pop(consumer.tag, None)
                consumer.unacked.clear()

    def purge_queue(self, name: str) -> int:
        with self.lock:
            queue = self._queue(name)
            count = queue.ready()
            for level in queue.levels:
                level.clear()
            return count

    def queue_size(self, name: str) -> int:
        with self.lock:
            queue = self._queue(name)
            queue.expire_heads(self)
            return queue.ready()

    def queue_stats(self, name: str) -> QueueStats:
        with self.lock:
            queue = self._queue(name)
            queue.expire_heads(self)
            holders = [
                consumer
                for conn in self.connections
                for consumer in conn.consumers.values()
                if consumer.queue is queue
            ]
            unacked = sum(len(consumer.unacked) for consumer in holders)
            return QueueStats(name, queue.ready(), unacked, len(queue.consumers))

    def peek(self, name: str, limit: int) -> list[Delivery]:
        """The next ``limit`` live messages, in the order ``pop`` would take them."""
        with self.lock:
            queue = self._queue(name)
            queue.expire_heads(self)
            now = time.monotonic()
            live = (
                stored
                for level in queue.highest_first
                for stored in level
                if stored.expires_at is None or stored.expires_at > now
            )
            return [
                Delivery(
                    stored.envelope,
                    stored.exchange,
                    stored.routing_key,
                    stored.deliveries > 0,
                    stored.deliveries,
                    None,
                )
                for stored in itertools.islice(live, limit)
            ]

    def declare_exchange(self, name: str, kind: ExchangeKind, durable: bool) -> None:
        with self.lock:
            exchange = self.exchanges.get(name)
            if exchange is None:
                self.exchanges[name] = _Exchange(name, kind, durable)
            elif (exchange.kind, exchange.durable) != (kind, durable):
                raise exchange_conflict(
                    name,
                    {"kind": exchange.kind.value, "durable": exchange.durable},
                    {"kind": kind.value, "durable": durable},
                )

    def delete_exchange(self, name: str) -> None:
        with self.lock:
            self.exchanges.pop(name, None)

    def bind(self, queue: str, exchange: str, key: str) -> None:
        with self.lock:
            self._queue(queue)
            self.exchange(exchange).bindings.add((queue, key))

    def _queue(self, name: str) -> _Queue:
        queue = self.queues.get(name)
        if queue is None:
            raise NotFound(
                f"queue {name!r} does not exist on memory://{self.name}; declare it first"
            )
        return queue

    def exchange(self, name: str) -> _Exchange:
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise NotFound(
                f"exchange {name!r} does not exist on memory://{self.name}; declare it first"
            )
        return exchange

    # -- messages ---------------------------------------------------------------------------

    def publish(
        self, exchange: str, key: str, envelopes: Sequence[Envelope], mandatory: bool
    ) -> None:
        with self.lock:
            if envelopes[0].delay is not None:
                for envelope in envelopes:
                    self._delay(exchange, key, envelope)
                return
            if exchange == "":
                targets = [key] if key in self.queues else []
            else:
                targets = sorted(self.exchange(exchange).route(key))
            if not targets:
                if mandatory:
                    raise Unroutable(
                        f"no queue is bound to exchange {exchange!r} for key {key!r}; "
                        "the message was not delivered"
                    )
                return
            for name in targets:
                queue = self.queues[name]
                for envelope in envelopes:
                    ttl = _ttl(envelope, queue.options)
                    queue.push(_Stored(envelope, exchange, key, ttl))
                    if ttl is not None:
                        self._schedule_expiry(queue.name, ttl)
                self.dispatch(queue)

    def _delay(self, exchange: str, key: str, envelope: Envelope) -> None:
        """Keep the message until it is due, then route it as published then."""
        if exchange:
            self.exchange(exchange)  # NotFound now, as for any publish
        assert envelope.delay is not None
        delayed = _Delayed(exchange, key, replace(envelope, delay=None))
        self.delayed.add(delayed)
        self.clock.at(time.monotonic() + envelope.delay, lambda: self._release(delayed))

    def _release(self, delayed: _Delayed) -> None:
        if delayed in self.delayed:  # not lost in a restart
            self.delayed.discard(delayed)
            if not delayed.exchange or delayed.exchange in self.exchanges:
                self.publish(delayed.exchange, delayed.key, (delayed.envelope,), False)

    def _schedule_expiry(self, name: str, ttl: float) -> None:
        try:  # on the publisher's loop; on the clock when the clock released a delayed message
            asyncio.get_running_loop().call_later(ttl + 0.001, self._expire, name)
        except RuntimeError:
            self.clock.at(time.monotonic() + ttl + 0.001, lambda: self._expire(name))

    def _expire(self, name: str) -> None:
        with self.lock:
            queue = self.queues.get(name)
            if queue is not None:
                queue.expire_heads(self)
                self.dispatch(queue)

    def dispatch(self, queue: _Queue) -> None:
        """Hand ready messages to consumers with room, round-robin."""
        while queue.consumers:
            consumer = queue.take_consumer()
            if consumer is None:
                return
            stored = queue.pop(self)
            if stored is None:
                return
            stored.deliveries += 1
            if not consumer.auto_ack:
                consumer.unacked[stored.seq] = stored
            delivery = Delivery(
                stored.envelope,
                stored.exchange,
                stored.routing_key,
                stored.deliveries > 1,
                stored.deliveries,
                (consumer, stored.seq),
                consumer.tag,
            )
            consumer.connection.call(consumer.deliver, delivery)

    def consume(
        self,
        conn: _Connection,
        queue_name: str,
        tag: str,
        deliver: DeliverCallback,
        prefetch: int,
        auto_ack: bool,
    ) -> None:
        with self.lock:
            queue = self._queue(queue_name)
            consumer = _Consumer(tag, queue, conn, deliver, prefetch, auto_ack)
            queue.consumers.append(consumer)
            queue.had_consumer = True
            conn.consumers[tag] = consumer
            self.dispatch(queue)

    def cancel(self, conn: _Connection, tag: str) -> None:
        with self.lock:
            consumer = conn.consumers.get(tag)
            if consumer is None:
                return
            queue = consumer.queue
            self._retire(consumer)
            if not consumer.unacked:
                conn.consumers.pop(tag, None)
                if queue.options.auto_delete and not queue.consumers:
                    self.delete_queue(queue.name)

    @staticmethod
    def _retire(consumer: _Consumer) -> None:
        """Stop delivering to a consumer; its unacked messages stay settleable."""
        if consumer.active:
            consumer.active = False
            consumer.queue.consumers.remove(consumer)

    def settle(self, tag: tuple[_Consumer, int], outcome: str) -> None:
        """Ack (``ack``), requeue (``requeue``) or reject (``reject``) one delivery."""
        consumer, seq = tag
        with self.lock:
            stored = consumer.unacked.pop(seq, None)
            if stored is None:
                return  # already returned to the queue by a crash or restart
            queue = consumer.queue
            if outcome == "requeue":
                queue.push(stored, front=True)
            elif outcome == "reject":
                self.dead_letter(queue, stored, REJECTED)
            if not consumer.active and not consumer.unacked:
                consumer.connection.consumers.pop(consumer.tag, None)
                if queue.options.auto_delete and not queue.consumers:
                    self.delete_queue(queue.name)
                    return
            if queue.name in self.queues:
                self.dispatch(queue)

    def dead_letter(self, queue: _Queue, stored: _Stored, reason: str) -> None:
        target = self.queues.get(queue.options.dead_letter or "")
        if target is None:
            return
        headers = dead_letter_headers(stored.envelope.headers, queue=queue.name, reason=reason)
        envelope = replace(stored.envelope, headers=headers, expiration=None)
        ttl = _ttl(envelope, target.options)
        target.push(_Stored(envelope, stored.exchange, stored.routing_key, ttl))
        self.dispatch(target)

    # -- connections and faults -------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop, on_lost: Callable[[], None]) -> _Connection:
        with self.lock:
            conn = _Connection(loop, on_lost)
            self.connections.add(conn)
            return conn

    def detach(self, conn: _Connection) -> None:
        """End a connection: unacked messages return to their queues, exclusive queues go."""
        with self.lock:
            conn.alive = False
            self.connections.discard(conn)
            touched: set[_Queue] = set()
            for consumer in list(conn.consumers.values()):
                queue = consumer.queue
                self._retire(consumer)
                for seq in sorted(consumer.unacked, reverse=True):
                    queue.push(consumer.unacked[seq], front=True)
                consumer.unacked.clear()
                touched.add(queue)
            conn.consumers.clear()
            for queue in list(self.queues.values()):
                if queue.owner is conn or (
                    queue.options.auto_delete and queue.had_consumer and not queue.consumers
                ):
                    self.delete_queue(queue.name)
            for queue in touched:
                if queue.name in self.queues:
                    self.dispatch(queue)

    def restart(self) -> None:
        """Simulate a broker restart: what is not durable and persistent is gone; every
        connection is dropped and reconnects, re-declaring its topology."""
        with self.lock:
            connections = list(self.connections)
            for conn in connections:
                self.detach(conn)
            for name, queue in list(self.queues.items()):
                if not queue.options.durable:
                    self.delete_queue(name)
                    continue
                for level in queue.levels:
                    kept = [s for s in level if s.envelope.persistent]
                    level.clear()
                    level.extend(kept)
            for name, exchange in list(self.exchanges.items()):
                if not exchange.durable:
                    del self.exchanges[name]
            self.delayed = {d for d in self.delayed if d.envelope.persistent}
        for conn in connections:
            if not conn.loop.is_closed():
                conn.loop.call_soon_threadsafe(conn.on_lost)


def _ttl(envelope: Envelope, options: QueueOptions) -> float | None:
    if envelope.expiration is None:
        return options.message_ttl
    if options.message_ttl is None:
        return envelope.expiration
    return min(envelope.expiration, options.message_ttl)


_brokers: dict[str, MemoryBroker] = {}
_brokers_lock = threading.Lock()


def get_broker(name: str) -> MemoryBroker:
    """The process-wide broker for ``memory://name`` (created on first use)."""
    with _brokers_lock:
        broker = _brokers.get(name)
        if broker is None:
            broker = _brokers[name] = MemoryBroker(name)
        return broker


@dataclass
class _ResumableConsumer:
    """What this transport knows of one of its consumers, to resume it after a restart."""

    transport: MemoryTransport
    tag: str
    queue: str
    deliver: DeliverCallback
    prefetch: int
    auto_ack: bool

    async def resume(self) -> None:
        conn = await self.transport._connection()
        self.transport.broker.consume(
            conn, self.queue, self.tag, self.deliver, self.prefetch, self.auto_ack
        )


class MemoryTransport(Transport):
    """Records what it declares (``Topology``) so that, after a simulated restart, it
    reconnects and declares it again — the recovery a real transport performs."""

    @classmethod
    def capabilities_for(cls, url: BrokerURL) -> Capabilities:
        return Capabilities(
            persistence=True,
            priority=True,
            ttl=True,
            dead_letter=True,
            delivery_count=True,
            mandatory=True,
            delay=True,
            peek=True,
            list_queues=True,
        )

    def __init__(self, url: BrokerURL) -> None:
        super().__init__(url)
        self.broker = get_broker(self.url.name)
        self._conn: _Connection | None = None
        self._closed = False
        self._topology = Topology()
        self._tags = itertools.count(1)

    async def _connection(self) -> _Connection:
        """The live connection, reconnecting (and declaring again) after a restart."""
        if self._closed or self._conn is None:
            raise Closed(f"the memory://{self.broker.name} transport is closed")
        if not self._conn.alive:
            await self._reconnect()
        return self._conn

    async def _reconnect(self) -> None:
        """Attach anew and replay the topology. Nothing in it waits (the broker's methods are
        plain calls), so no other task can run a call between the attach and the replay."""
        if self._closed or self._conn is None or self._conn.alive:
            return
        conn = self._conn = self.broker.attach(self._conn.loop, self._lost)
        broker = self.broker

        async def exchange(name: str, kind: ExchangeKind, durable: bool) -> None:
            broker.declare_exchange(name, kind, durable)

        async def queue(name: str, options: QueueOptions) -> None:
            broker.declare_queue(conn, name, options)

        async def binding(queue: str, exchange: str, key: str) -> None:
            broker.bind(queue, exchange, key)

        await self._topology.replay(
            exchange=exchange, queue=queue, binding=binding, where=f"memory://{broker.name}"
        )

    def _lost(self) -> None:
        """The broker restarted (on this connection's loop): reconnect now, as a real
        transport's recovery would, rather than on the next call."""
        task = asyncio.ensure_future(self._reconnect())
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def connect(self) -> None:
        self._conn = self.broker.attach(asyncio.get_running_loop(), self._lost)

    async def close(self) -> None:
        if self._conn is not None and not self._closed:
            self._closed = True
            self.broker.detach(self._conn)

    async def abort(self) -> None:
        await self.close()

    async def declare_queue(self, name: str, options: QueueOptions) -> None:
        self.broker.declare_queue(await self._connection(), name, options)
        self._topology.queue_declared(name, options)

    async def delete_queue(self, name: str) -> None:
        await self._connection()
        self.broker.delete_queue(name)
        self._topology.queue_deleted(name)

    async def purge_queue(self, name: str) -> int:
        await self._connection()
        return self.broker.purge_queue(name)

    async def queue_size(self, name: str) -> int:
        await self._connection()
        return self.broker.queue_size(name)

    async def queue_stats(self, name: str) -> QueueStats:
        await self._connection()
        return self.broker.queue_stats(name)

    async def queue_names(self) -> list[str]:
        await self._connection()
        with self.broker.lock:
            return sorted(self.broker.queues)

    async def peek(self, name: str, limit: int) -> list[Delivery]:
        await self._connection()
        return self.broker.peek(name, limit)

    async def declare_exchange(self, name: str, kind: ExchangeKind, durable: bool) -> None:
        await self._connection()
        self.broker.declare_exchange(name, kind, durable)
        self._topology.exchange_declared(name, kind, durable)

    async def check_exchange(self, name: str) -> None:
        await self._connection()
        with self.broker.lock:
            self.broker.exchange(name)

    async def delete_exchange(self, name: str) -> None:
        await self._connection()
        self.broker.delete_exchange(name)
        self._topology.exchange_deleted(name)

    async def bind(self, queue: str, exchange: str, key: str) -> None:
        await self._connection()
        self.broker.bind(queue, exchange, key)
        self._topology.bound(queue, exchange, key)

    async def publish(
        self, exchange: str, key: str, envelope: Envelope, *, mandatory: bool = False
    ) -> None:
        await self._connection()
        self.broker.publish(exchange, key, (envelope,), mandatory)

    async def publish_many(
        self, exchange: str, items: Sequence[tuple[str, Envelope]], *, mandatory: bool = False
    ) -> None:
        await self._connection()
        for key, group in itertools.groupby(items, key=lambda item: item[0]):
            self.broker.publish(exchange, key, [envelope for _, envelope in group], mandatory)

    async def consume(
        self, queue: str, deliver: DeliverCallback, *, prefetch: int, auto_ack: bool = False
    ) -> str:
        conn = await self._connection()
        tag = f"ctag-{next(self._tags)}"
        self.broker.consume(conn, queue, tag, deliver, prefetch, auto_ack)
        self._topology.consuming(
            tag, _ResumableConsumer(self, tag, queue, deliver, prefetch, auto_ack)
        )
        return tag

    async def cancel(self, consumer_tag: str) -> None:
        self.broker.cancel(await self._connection(), consumer_tag)
        self._topology.cancelled(consumer_tag)

    async def ack(self, delivery: Delivery) -> None:
        self.broker.settle(delivery.tag, "ack")

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        self.broker.settle(delivery.tag, "requeue" if requeue else "reject")
