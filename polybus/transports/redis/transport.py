"""``redis://`` / ``rediss://``, ``redis+sentinel://``, ``redis+cluster://`` and
``fakeredis://`` (server-less).

Queues are streams with one consumer group; exchanges, bindings and declarations are keys beside
them, changed only by the Lua scripts of ``lua/`` (layout and guarantees: ``docs/redis.md``).
Every command goes over a ``Link`` (``_wire``): a control link for scripts, declarations and
queries, one for publishing (``_publisher``), one for acks, one per consumer (``_consumer``),
and the heartbeat thread's own (``_heartbeat``). fakeredis is one more wire (``_fake``).

Liveness: every transport is a member of the ``conns`` sorted set, scored by the deadline its
heartbeat keeps pushing forward (``?heartbeat=`` seconds, default 10). Each heartbeat also reaps
connections past their deadline: their pending entries go back to their queues, counted as
deliveries, and their exclusive queues are deleted. A consumer that is slow but alive is never
reaped, however long it holds a message.

Batching: the publishes of one event-loop turn are one round of writes, and so are its acks.

Recovery: a link opens its connection again on the next command; consumers retry with backoff;
a heartbeat that finds the server restarted (its run id changed) or this connection reaped
replays the ``Topology``. A publish whose outcome is unknown raises ``PublishFailed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from redis import exceptions as redis_errors

from polybus.core.errors import (
    Closed,
    ConfigurationError,
    ConnectionFailed,
    InvalidURL,
    MissingDependency,
    NotFound,
    PolybusError,
)
from polybus.core.options import TLS, UrlOption, count, seconds, text, tls_context
from polybus.core.tasks import finished
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
from polybus.transports.redis._cluster import CLUSTER_PORT, ClusterNodes, hash_tagged
from polybus.transports.redis._codec import decode_entry
from polybus.transports.redis._consumer import Consumer, consumer_name
from polybus.transports.redis._errors import ERRORS, translate, why_not_connected
from polybus.transports.redis._fake import FakeWire
from polybus.transports.redis._heartbeat import Beat, HeartbeatThread, beat
from polybus.transports.redis._publisher import Publisher
from polybus.transports.redis._scripts import Scripts
from polybus.transports.redis._sentinel import SENTINEL_PORT, Sentinels
from polybus.transports.redis._session import Replicas, Session
from polybus.transports.redis._wire import Endpoint, Link, SocketWire, Wire, bulk_strings, command

log = logging.getLogger("polybus.redis")

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"

SOCKET_TIMEOUT = 10.0  # seconds without a reply, beyond connect_timeout, before a link breaks

URL_OPTIONS = (
    UrlOption(
        "heartbeat",
        seconds(),
        10.0,
        "seconds after its last heartbeat that a connection counts as dead and its messages"
        " go to other consumers (default 10)",
    ),
    UrlOption("connect_timeout", seconds(), 2.0, "seconds to connect (default 2)"),
    UrlOption("prefix", text, "polybus", "the first part of every key (default polybus)"),
    UrlOption(
        "wait_replicas",
        count(0, 99),
        0,
        "replicas that must have a published message (Redis's WAIT) before its send returns:"
        " what a failover keeps (default 0: the master's word alone)",
    ),
    UrlOption(
        "wait_timeout",
        seconds(),
        1.0,
        "seconds a send waits for those replicas; fewer in time is PublishFailed (default 1)",
    ),
    *TLS,
)


@dataclass(frozen=True)
class Settings:
    """What the URL says beyond host and database."""

    prefix: str
    heartbeat: float
    connect_timeout: float
    wait_replicas: int
    wait_timeout: float


def settings_from_url(url: BrokerURL) -> Settings:
    given = url.settings
    base = given["prefix"]
    prefix = f"{base}:{url.namespace}:" if url.namespace else f"{base}:"
    if url.scheme == CLUSTER_SCHEME:
        prefix = hash_tagged(prefix)  # one slot: see _cluster
    return Settings(
        prefix,
        given["heartbeat"],
        given["connect_timeout"],
        given["wait_replicas"],
        given["wait_timeout"],
    )


def endpoint_of(url: BrokerURL, settings: Settings) -> Endpoint | Sentinels | ClusterNodes:
    """Where a ``redis://`` / ``rediss://`` URL points (its path is the database number), the
    sentinels of a ``redis+sentinel://`` URL (its path is the master's name, then the database
    number), or the nodes of a ``redis+cluster://`` URL (database 0 only).

    :raises InvalidURL: the path is not a database number, or TLS options on ``redis://``.
    """
    path = url.path.strip("/")
    master = ""
    if url.scheme == SENTINEL_SCHEME:
        master, _, path = path.partition("/")
        if not master:
            raise InvalidURL(
                f"{url.redacted()!r}: name the master the sentinels watch:"
                " redis+sentinel://host:26379,host2:26379/<master name>[/db]"
            )
    try:
        db = int(path or "0")
        if db < 0:
            raise ValueError(db)
    except ValueError:
        raise InvalidURL(f"{url.redacted()!r}: the path must be a database number") from None
    if db and url.scheme == CLUSTER_SCHEME:
        raise InvalidURL(f"{url.redacted()!r}: a Redis Cluster has database 0 only")
    tls = None
    if url.scheme == "rediss":
        try:
            tls = tls_context(url.settings)
        except ConfigurationError as exc:
            raise InvalidURL(f"{url.redacted()!r}: {exc}") from exc
    elif any(name.startswith("ssl_") for name in url.options):
        raise InvalidURL(f"{url.redacted()!r}: ssl_ options need a rediss:// URL")
    endpoint = Endpoint(
        url.host or "localhost",
        url.port or 6379,
        db,
        url.username,
        url.password,
        tls,
        settings.connect_timeout,
    )
    if url.scheme == CLUSTER_SCHEME:
        nodes = tuple((host, port or CLUSTER_PORT) for host, port in url.hosts)
        return ClusterNodes(nodes or (("localhost", CLUSTER_PORT),), settings.prefix, endpoint)
    if url.scheme != SENTINEL_SCHEME:
        return endpoint
    addresses = tuple((host, port or SENTINEL_PORT) for host, port in url.hosts)
    return Sentinels(addresses or (("localhost", SENTINEL_PORT),), master, endpoint)


CAPABILITIES = Capabilities(
    persistence=True,
    priority=True,
    ttl=True,
    dead_letter=True,
    delivery_count=True,
    mandatory=True,
    delay=True,
    peek=True,
    list_queues=True,
    reason="persistence needs the server's append-only file (appendonly yes)",
)
DUE_BATCH = 100
"""Delayed messages one ``DUE`` script routes at most (the heartbeat routes as many per beat)."""
RETIRE_AGAIN = 0.5
"""Seconds after a cancel when the consumer is retired once more (``_retire_again``)."""
FAKEREDIS_CAPABILITIES = replace(
    CAPABILITIES,
    persistence=False,
    reason="fakeredis keeps its data in this process's memory: there is no restart to survive",
)


def _ack_and_delete(stream: str, ids: list[bytes]) -> tuple[bytes, bytes]:
    """``XACK <stream> g <ids>`` and ``XDEL <stream> <ids>``, the ids packed once for both."""
    packed = b"".join([b"$%d\r\n%s\r\n" % (len(entry_id), entry_id) for entry_id in ids])
    return (
        b"*%d\r\n%s%s" % (3 + len(ids), bulk_strings("XACK", stream, "g"), packed),
        b"*%d\r\n%s%s" % (2 + len(ids), bulk_strings("XDEL", stream), packed),
    )


def _peeked(fields: list[Any]) -> Delivery:
    """A ready entry as a consumer would get it, but not delivered: no tag, no new count."""
    envelope, exchange, key, earlier, defect = decode_entry(fields)
    return Delivery(envelope, exchange, key, earlier > 0, earlier, None, defect=defect)


class RedisTransport(Transport):
    """Streams for queues, Lua for routing, a heartbeat for liveness."""

    url_options = URL_OPTIONS
    one_host_hint = (
        " (Redis behind Sentinel: redis+sentinel://s1:26379,s2:26379/<master name>;"
        " a Redis Cluster: redis+cluster://n1:6379,n2:6379)"
    )

    @classmethod
    def takes_several_hosts(cls, url: BrokerURL) -> bool:
        return url.scheme in (SENTINEL_SCHEME, CLUSTER_SCHEME)  # its sentinels, its nodes

    @classmethod
    def capabilities_for(cls, url: BrokerURL) -> Capabilities:
        return FAKEREDIS_CAPABILITIES if url.scheme == "fakeredis" else CAPABILITIES

    def __init__(self, url: BrokerURL) -> None:
        super().__init__(url)
        url = self.url  # with its settings
        self.settings = settings_from_url(url)
        self.conn_id = os.urandom(8).hex()
        self._endpoint = None if url.scheme == "fakeredis" else endpoint_of(url, self.settings)
        self._where = url.redacted()
        self._scripts = Scripts(self.settings.prefix)
        self._topology = Topology()
        self._session = Session(
            connection_id=self.conn_id,
            scripts=self._scripts,
            where=self._where,
            new_link=self._new_link,
            run_script=self._script,
            server_time_ms=self._server_time_ms,
            queue_ack=self._queue_ack,
            declared=self._topology.queues.get,
            replicas=Replicas(self.settings.wait_replicas, self.settings.wait_timeout),
        )
        self._control: Link | None = None
        self._publisher: Publisher | None = None
        self._ack_link: Link | None = None
        self._acks: dict[str, list[bytes]] = {}
        self._acking: asyncio.Task[None] | None = None
        self._consumers: dict[str, Consumer] = {}
        self._tags = itertools.count(1)
        self._epoch: bytes | None = None
        self._clock_offset_ms = 0.0
        self._heartbeat: HeartbeatThread | None = None
        self._beat_failing = False
        self._restoring: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- plumbing ---------------------------------------------------------------------------

    async def _open_wire(self) -> Wire:
        if self._endpoint is None:
            return await FakeWire.open(self.url.name)
        if isinstance(self._endpoint, Endpoint):
            return await SocketWire.open(self._endpoint)
        return await self._endpoint.open_master()  # asked of the sentinels or the cluster

    def _new_link(self) -> Link:
        """A connection of its own for pipelined commands (see ``_wire``)."""
        return Link(self._open_wire, self.settings.connect_timeout + SOCKET_TIMEOUT)

    def _link(self) -> Link:
        """The control link, or ``Closed``."""
        if self._closed or self._control is None:
            raise Closed(f"the transport to {self._where} is closed")
        return self._control

    async def _script(
        self, name: str, *args: Any, fallback: type[PolybusError] = ConnectionFailed
    ) -> Any:
        """Run a script on the control link; its error reply raised as a ``PolybusError``."""
        where = f"Redis at {self._where} ({name})"
        try:
            reply = await self._scripts.call(self._link(), name, *args)
        except ERRORS as exc:
            raise translate(exc, fallback, where) from exc
        if isinstance(reply, redis_errors.ResponseError):
            raise translate(reply, fallback, where)
        return reply

    def _server_time_ms(self) -> float:
        """Now on the server's clock, as far as the last heartbeat tells."""
        return time.time() * 1000 + self._clock_offset_ms

    # -- connection lifecycle ---------------------------------------------------------------

    async def connect(self) -> None:
        if self._endpoint is not None and importlib.util.find_spec("hiredis") is None:
            raise MissingDependency(
                "the redis:// transport parses replies with hiredis; run: pip install "
                "'polybus[redis]'"
            )
        self._control = self._new_link()
        self._ack_link = self._new_link()
        self._publisher = Publisher(self._session)
        try:
            await self._control.call(*self._scripts.load_commands())
            self._on_beat(await beat(self._control, self._scripts, self.conn_id, self._liveness_ms))
            if self._endpoint is not None:
                await self._warn_without_persistence()
        except ERRORS as exc:
            await self._drop_links()
            endpoint = self._endpoint
            if isinstance(endpoint, Endpoint):
                why = why_not_connected(exc, f"{endpoint.host}:{endpoint.port}", endpoint.db)
            else:  # the sentinels or the cluster's nodes said why, or fakeredis
                why = why_not_connected(exc, self._where, 0)
            raise ConnectionFailed(f"cannot connect to Redis at {self._where}: {why}") from exc
        self._heartbeat = HeartbeatThread(
            self._open_wire,
            self.settings.connect_timeout + SOCKET_TIMEOUT,
            self._scripts,
            self.conn_id,
            self._liveness_ms,
            self._on_beat,
            asyncio.get_running_loop(),
        )
        self._heartbeat.start()

    @property
    def _liveness_ms(self) -> int:
        return int(self.settings.heartbeat * 1000)

    async def _warn_without_persistence(self) -> None:
        assert self._control is not None
        (reply,) = await self._control.call(command("CONFIG", "GET", "appendonly"))
        if isinstance(reply, list) and reply[1:] == [b"no"]:  # (CONFIG may be disabled)
            log.warning(
                "Redis at %s runs without its append-only file (appendonly no): a restart"
                " loses what was written since the last snapshot",
                self._where,
            )

    def _on_beat(self, result: Beat | BaseException) -> None:
        """What a heartbeat learnt: the server's clock; a lost or restored connection (one
        line each); a server that restarted or reaped this connection (declare again)."""
        if isinstance(result, BaseException):
            if not self._beat_failing:
                self._beat_failing = True
                log.warning("lost the connection to %s (%r); reconnecting", self._where, result)
            return
        if self._beat_failing:
            self._beat_failing = False
            log.warning("reconnected to %s", self._where)
        known, epoch, self._clock_offset_ms = result
        changed = self._epoch is not None and (epoch != self._epoch or not known)
        self._epoch = epoch
        if changed and not self._closed:
            log.warning(
                "Redis at %s restarted or reaped this connection; declaring again", self._where
            )
            restoring = asyncio.ensure_future(self._restore())
            self._restoring.add(restoring)
            restoring.add_done_callback(self._restoring.discard)

    async def _restore(self) -> None:
        async def binding(queue: str, exchange: str, key: str) -> None:
            await self._script("bind", queue, exchange, key)

        try:
            await self._topology.replay(
                exchange=self._declare_exchange,
                queue=self._declare_queue,
                binding=binding,
                where=self._where,
            )
        except ConnectionFailed as exc:  # the next heartbeat that finds it so tries again
            log.warning("could not declare again on %s: %s", self._where, exc)
            self._epoch = None

    async def close(self) -> None:
        if self._closed or self._control is None:
            self._closed = True
            return
        await self._stop_heartbeat()
        for consumer in list(self._consumers.values()):
            await consumer.stop()
        if self._publisher is not None:
            await self._publisher.drain()
        await finished(self._acking)
        try:
            await self._script("release", self.conn_id)
        except PolybusError as exc:
            log.warning("could not say goodbye to %s: %s", self._where, exc)
        self._closed = True
        self._consumers.clear()
        await self._drop_links()

    async def abort(self) -> None:
        self._closed = True
        await self._stop_heartbeat(wait=False)
        for consumer in list(self._consumers.values()):
            await consumer.stop()
        if self._publisher is not None:
            self._publisher.abort()
        if self._acking is not None:
            self._acking.cancel()
        self._consumers.clear()
        await self._drop_links()

    async def _stop_heartbeat(self, *, wait: bool = True) -> None:
        """Stop the heartbeat thread; ``wait`` for it to end (not on an abort: a beat stuck on
        a hung server ends on its own, within the link's timeout)."""
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.stop()
            if wait:
                await asyncio.get_running_loop().run_in_executor(None, heartbeat.join)
        for restoring in list(self._restoring):
            restoring.cancel()

    async def _drop_links(self) -> None:
        links = [self._control, self._ack_link, self._publisher.link if self._publisher else None]
        for link in links:
            if link is not None:
                await link.close()

    # -- declarations -----------------------------------------------------------------------

    async def declare_queue(self, name: str, options: QueueOptions) -> None:
        await self._declare_queue(name, options)
        self._topology.queue_declared(name, options)

    async def _declare_queue(self, name: str, options: QueueOptions) -> None:
        ttl = "" if options.message_ttl is None else str(round(options.message_ttl * 1000))
        await self._script(
            "declare_queue",
            self.conn_id,
            name,
            json.dumps(asdict(options), sort_keys=True),
            (options.max_priority or 0) + 1,
            options.dead_letter or "",
            ttl,
            "1" if options.exclusive else "0",
            "1" if options.exclusive or options.auto_delete else "0",
            "1" if options.durable else "0",
        )

    async def delete_queue(self, name: str) -> None:
        await self._script("delete_queue", name)
        self._topology.queue_deleted(name)

    async def purge_queue(self, name: str) -> int:
        count: int = await self._script("ready", name, "purge")
        return count

    async def queue_size(self, name: str) -> int:
        count: int = await self._script("ready", name, "size")
        return count

    async def queue_stats(self, name: str) -> QueueStats:
        """Ready as ``queue_size`` counts them; unacked: the pending entries of every level
        (delivered, not yet acked or returned); consumers: those registered on the queue
        whose connection's heartbeat is alive (one that died counts no more, reaped or not).
        One script, so the three are of one moment."""
        ready, unacked, consumers = await self._script("ready", name, "stats")
        return QueueStats(name, ready, unacked, consumers)

    async def queue_names(self) -> list[str]:
        """The declarations under this prefix, one ``SCAN`` step per script call (a large
        keyspace never blocks the server for long). On a cluster every key of the prefix is
        in one slot, on the master the control link talks to."""
        names: set[str] = set()
        cursor: bytes = b"0"
        while True:
            cursor, found = await self._script("queues", cursor)
            names.update(name.decode() for name in found)
            if cursor == b"0":
                return sorted(names)

    async def peek(self, name: str, limit: int) -> list[Delivery]:
        """The entries past each level's last delivered id, highest level first, as the
        consumers read them; decoded as a consumer decodes them, with the deliveries so far."""
        entries = await self._script("peek", name, limit)
        return [_peeked(fields) for fields in entries]

    async def declare_exchange(self, name: str, kind: ExchangeKind, durable: bool) -> None:
        await self._declare_exchange(name, kind, durable)
        self._topology.exchange_declared(name, kind, durable)

    async def _declare_exchange(self, name: str, kind: ExchangeKind, durable: bool) -> None:
        await self._script("declare_exchange", name, kind.value, str(durable))

    async def check_exchange(self, name: str) -> None:
        if not await self._script("exchange_exists", name):
            raise NotFound(f"exchange {name!r} does not exist on {self._where}")

    async def delete_exchange(self, name: str) -> None:
        await self._script("delete_exchange", name)
        self._topology.exchange_deleted(name)

    async def bind(self, queue: str, exchange: str, key: str) -> None:
        await self._script("bind", queue, exchange, key)
        self._topology.bound(queue, exchange, key)

    # -- publishing -------------------------------------------------------------------------

    async def publish(
        self, exchange: str, key: str, envelope: Envelope, *, mandatory: bool = False
    ) -> None:
        delay = envelope.delay
        await self._publishing().publish(exchange, [(key, (envelope,))], mandatory, delay)
        if delay is not None:  # on time from here; any connection's heartbeat is the backstop
            loop = asyncio.get_running_loop()
            loop.call_later(delay + 0.001, lambda: self._release_due(loop))

    def _release_due(self, loop: asyncio.AbstractEventLoop) -> None:
        """Route what fell due now (a script: whoever runs it first routes each message once)."""
        if self._closed:
            return
        task = loop.create_task(self._script("due", DUE_BATCH))
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def publish_many(
        self, exchange: str, items: Sequence[tuple[str, Envelope]], *, mandatory: bool = False
    ) -> None:
        runs = [
            (key, [envelope for _, envelope in group])
            for key, group in itertools.groupby(items, key=lambda item: item[0])
        ]
        await self._publishing().publish(exchange, runs, mandatory)

    def _publishing(self) -> Publisher:
        self._link()  # raises Closed on a closed transport
        assert self._publisher is not None
        return self._publisher

    # -- consuming --------------------------------------------------------------------------

    async def consume(
        self, queue: str, deliver: DeliverCallback, *, prefetch: int, auto_ack: bool = False
    ) -> str:
        tag = f"c{next(self._tags)}"
        name = consumer_name(self.conn_id, tag)
        levels = int(await self._script("consume", self.conn_id, queue, name))
        consumer = Consumer(self._session, tag, queue, levels, deliver, max(1, prefetch), auto_ack)
        self._consumers[tag] = consumer
        self._topology.consuming(tag, consumer)
        consumer.start()
        return tag

    async def cancel(self, consumer_tag: str) -> None:
        consumer = self._consumers.pop(consumer_tag, None)
        self._topology.cancelled(consumer_tag)
        if consumer is None:
            return
        await consumer.stop()
        await self._retire(consumer)
        loop = asyncio.get_running_loop()
        loop.call_later(RETIRE_AGAIN, lambda: self._retire_again(loop, consumer))

    async def _retire(self, consumer: Consumer) -> None:
        """Return what is pending on a cancelled consumer but the entries it still holds.

        Once is not always enough: Redis handles a closed link a moment after what comes on
        other connections, so a read the consumer's link sent just before it closed can still
        be served — the copies of messages returned meanwhile (a subscription's unreceived
        ones, requeued right after the cancel), or new ones — and they would wait, pending on
        a consumer nobody reads, until this connection closes. So the settle of the last entry
        a cancelled consumer held retires it again (a requeue: before it returns, as Redis
        serves a blocked read before it runs the next command), and so does a timer, for
        whatever else its last read took."""
        if self._acking is not None:  # acks on their way are no longer held: let them land
            with contextlib.suppress(PolybusError):
                await asyncio.shield(self._acking)
        await self._script("retire", consumer.queue, consumer.name, "1", *consumer.held)

    def _retire_again(self, loop: asyncio.AbstractEventLoop, consumer: Consumer) -> None:
        """The timer's retire: if the consumer still holds entries, the settle of its last
        one retires it instead (a retire that keeps thousands of held entries is slow)."""
        if self._closed or consumer.held:
            return  # closing released everything this connection's consumers had
        task = loop.create_task(self._retire(consumer))
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def ack(self, delivery: Delivery) -> None:
        """Queue the ack and return, as AMQP's basic.ack does: the acks of a whole loop turn
        go out in one write. An ack that never lands means a redelivery."""
        consumer, stream, entry_id = delivery.tag
        if not consumer.auto_ack:
            consumer.settled(entry_id)
            self._queue_ack(stream, entry_id)
            if consumer.stopped and not consumer.held:  # the last a cancelled one held
                self._retire_again(asyncio.get_running_loop(), consumer)

    def _queue_ack(self, stream: str, entry_id: bytes) -> None:
        """XACK and XDEL the entry with the next round of acks."""
        self._link()  # raises Closed on a closed transport
        self._acks.setdefault(stream, []).append(entry_id)
        if self._acking is None or self._acking.done():
            self._acking = asyncio.ensure_future(self._ack_loop())

    async def _ack_loop(self) -> None:
        """XACK and XDEL everything acked meanwhile, one write per round."""
        assert self._ack_link is not None
        while self._acks:
            acks, self._acks = self._acks, {}
            commands: list[bytes] = []
            for stream, ids in acks.items():
                commands += _ack_and_delete(stream, ids)
            try:
                await self._ack_link.call(*commands)
            except ERRORS as exc:
                error = translate(exc, ConnectionFailed, f"Redis at {self._where} (ack)")
                count = sum(len(ids) for ids in acks.values())
                log.warning("%d acks did not reach Redis; redelivered later: %s", count, error)

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        consumer, stream, entry_id = delivery.tag
        if consumer.auto_ack:
            return
        consumer.settled(entry_id)
        outcome = "requeue" if requeue else "reject"
        await self._script("settle", consumer.queue, stream, entry_id, outcome)
        if requeue and consumer.stopped and not consumer.held:
            await self._retire(consumer)  # its link's last read may have taken the copies
