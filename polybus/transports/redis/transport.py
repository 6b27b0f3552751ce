"""``redis://`` / ``rediss://`` and ``fakeredis://`` (server-less).

Queues are streams with one consumer group; exchanges, bindings and declarations are keys beside
them, changed only by the Lua scripts of ``_lua`` (layout and guarantees: ``docs/redis.md``).
Declarations, scripts and heartbeats use redis-py's asyncio client; publishing (``_publisher``),
acks and each consumer's reads (``_consumer``) use pipelined links of their own (``_link``).

Liveness: every transport is a member of the ``conns`` sorted set, scored by the deadline its
heartbeat keeps pushing forward (``?heartbeat=`` seconds, default 10). Each heartbeat also reaps
connections past their deadline: their pending entries go back to their queues, counted as
deliveries, and their exclusive queues are deleted. A consumer that is slow but alive is never
reaped, however long it holds a message.

Batching: the publishes of one event-loop turn are one round of writes, and so are its acks.

Recovery: redis-py reconnects on the next command; consumers retry with backoff; a heartbeat that
finds the server restarted (its run id changed) or this connection reaped declares again what this
transport declared. A publish whose outcome is unknown raises ``PublishFailed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
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
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from polybus.core.errors import (
    Closed,
    ConfigurationError,
    ConnectionFailed,
    InvalidURL,
    MissingDependency,
    NotFound,
    PolybusError,
)
from polybus.core.options import TLS, UrlOption, seconds, text, tls_context
from polybus.core.transport import (
    Capabilities,
    DeliverCallback,
    Delivery,
    Envelope,
    ExchangeKind,
    QueueOptions,
    Transport,
)
from polybus.core.url import BrokerURL
from polybus.transports.redis._consumer import Consumer
from polybus.transports.redis._errors import ERRORS as _ERRORS
from polybus.transports.redis._errors import translate, why_not_connected
from polybus.transports.redis._heartbeat import Beat, HeartbeatThread, beat
from polybus.transports.redis._link import (
    ClientWire,
    Endpoint,
    Link,
    SocketWire,
    Wire,
    bulk_strings,
)
from polybus.transports.redis._lua import PRELUDE, SCRIPTS
from polybus.transports.redis._publisher import Publisher

log = logging.getLogger("polybus.redis")

CONCURRENT_SCRIPTS = 32  # script calls in flight at once (each takes a pooled connection)
MAX_CONNECTIONS = 10_000  # a ceiling for redis-py's pool, which opens only what is asked for
SOCKET_TIMEOUT = 10.0  # seconds without a reply before a connection counts as lost


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
    *TLS,
)


@dataclass(frozen=True)
class Settings:
    """What the URL says beyond host and database."""

    prefix: str
    heartbeat: float
    connect_timeout: float


def settings_from_url(url: BrokerURL) -> Settings:
    given = url.settings
    base = given["prefix"]
    prefix = f"{base}:{url.namespace}:" if url.namespace else f"{base}:"
    return Settings(prefix, given["heartbeat"], given["connect_timeout"])


def endpoint_of(url: BrokerURL, settings: Settings) -> Endpoint:
    """Where a ``redis://`` / ``rediss://`` URL points (its path is the database number).

    :raises InvalidURL: the path is not a database number, or TLS options on ``redis://``.
    """
    try:
        db = int(url.path.strip("/") or "0")
        if db < 0:
            raise ValueError(db)
    except ValueError:
        raise InvalidURL(f"{url.redacted()!r}: the path must be a database number") from None
    tls = None
    if url.scheme == "rediss":
        try:
            tls = tls_context(url.settings)
        except ConfigurationError as exc:
            raise InvalidURL(f"{url.redacted()!r}: {exc}") from exc
    elif any(name.startswith("ssl_") for name in url.options):
        raise InvalidURL(f"{url.redacted()!r}: ssl_ options need a rediss:// URL")
    return Endpoint(
        url.host or "localhost",
        url.port or 6379,
        db,
        url.username,
        url.password,
        tls,
        settings.connect_timeout,
    )


_fake_servers: dict[str, Any] = {}


def fake_server_name(url: BrokerURL) -> str:
    """``fakeredis://name?...`` → ``name``: the in-process server the URL names."""
    return url.raw.split("://", 1)[1].split("?", 1)[0].strip("/")


def _fake_server(name: str) -> Any:
    """The process-wide fakeredis server for ``fakeredis://name`` (created on first use)."""
    try:
        import fakeredis
    except ImportError as exc:
        raise MissingDependency(
            "the fakeredis:// transport needs fakeredis; run: pip install 'polybus[fakeredis]'"
        ) from exc
    server = _fake_servers.get(name)
    if server is None:
        server = _fake_servers[name] = fakeredis.FakeServer()
    return server


def forget_fake_server(name: str) -> None:
    """Drop the fakeredis server of ``fakeredis://name`` (its data goes with it)."""
    _fake_servers.pop(name, None)


CAPABILITIES = Capabilities(
    persistence=True,
    priority=True,
    ttl=True,
    dead_letter=True,
    delivery_count=True,
    mandatory=True,
    reason="persistence needs the server's append-only file (appendonly yes)",
)
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


class RedisTransport(Transport):
    """Streams for queues, Lua for routing, a heartbeat for liveness."""

    capabilities = CAPABILITIES
    url_options = URL_OPTIONS

    def __init__(self, url: BrokerURL) -> None:
        super().__init__(url)
        url = self.url  # with its settings
        self.settings = settings_from_url(url)
        self.prefix = self.settings.prefix
        self.conn_id = os.urandom(8).hex()
        self._endpoint = None if url.scheme == "fakeredis" else endpoint_of(url, self.settings)
        self._client: Redis | None = None
        self._shas = {
            name: hashlib.sha1((PRELUDE + body).encode()).hexdigest()
            for name, body in SCRIPTS.items()
        }
        self._closed = False
        self._script_slots = asyncio.Semaphore(CONCURRENT_SCRIPTS)
        self._epoch: bytes | None = None
        self._heartbeat: HeartbeatThread | None = None
        self._heartbeat_client: Any = None
        self._beat_failing = False
        self._restoring: set[asyncio.Task[None]] = set()
        self._queues: dict[str, QueueOptions] = {}
        self._exchanges: dict[str, tuple[ExchangeKind, bool]] = {}
        self._bindings: set[tuple[str, str, str]] = set()
        self._consumers: dict[str, Consumer] = {}
        self._tags = itertools.count(1)
        self._publisher: Publisher | None = None
        self._ack_link: Link | None = None
        self._acks: dict[str, list[bytes]] = {}
        self._acking: asyncio.Task[None] | None = None
        self.clock_offset_ms = 0.0
        """The server's clock minus ours, in ms (from the last heartbeat), to check deadlines."""
        # fakeredis 2.x answers XREADGROUP with COUNT and BLOCK at once when nothing is there
        self.blocking_group_reads = url.scheme != "fakeredis"

    # -- plumbing -------------------------------------------------------------------------

    @property
    def client(self) -> Redis:
        if self._closed or self._client is None:
            raise Closed(f"the transport to {self.url.redacted()} is closed")
        return self._client

    def stream_key(self, queue: str, level: int) -> str:
        return f"{self.prefix}s:{queue}:{level}"

    def sha(self, script: str) -> str:
        return self._shas[script]

    def declared_queue(self, name: str) -> QueueOptions | None:
        """The options this transport declared the queue with, if it did."""
        return self._queues.get(name)

    def server_time_ms(self) -> float:
        """Now on the server's clock, as far as the last heartbeat tells."""
        return time.time() * 1000 + self.clock_offset_ms

    def new_link(self) -> Link:
        """A connection of its own for pipelined commands (see ``_link``)."""
        endpoint, client = self._endpoint, self.client
        if endpoint is None:  # fakeredis

            async def open_wire() -> Wire:
                return await ClientWire.open(client)

        else:

            async def open_wire() -> Wire:
                return await SocketWire.open(endpoint)

        return Link(open_wire, self.settings.connect_timeout + SOCKET_TIMEOUT)

    def _client_options(self) -> dict[str, Any]:
        """What redis-py's clients (asynchronous and not) are made with."""
        options: dict[str, Any] = {
            "protocol": 2,  # replies as arrays, whatever the client library's default
            "socket_connect_timeout": self.settings.connect_timeout,
            "socket_timeout": SOCKET_TIMEOUT + self.settings.connect_timeout,
        }
        endpoint = self._endpoint
        if endpoint is None:
            options["server"] = _fake_server(fake_server_name(self.url))
            return options
        options.update(
            host=endpoint.host,
            port=endpoint.port,
            db=endpoint.db,
            username=endpoint.username,
            password=endpoint.password,
        )
        if endpoint.tls is not None:
            options.update(self._tls_options())
        return options

    def _new_client(self) -> Redis:
        options = self._client_options()
        options.update(retry=Retry(NoBackoff(), 1), max_connections=MAX_CONNECTIONS)
        if self._endpoint is None:
            import fakeredis

            fake: Redis = fakeredis.FakeAsyncRedis(**options)
            return fake
        return Redis(**options)

    def _new_sync_client(self) -> Any:
        """A synchronous client, for the heartbeat's thread."""
        if self._endpoint is None:
            import fakeredis

            return fakeredis.FakeRedis(**self._client_options())
        import redis

        return redis.Redis(**self._client_options())

    def _tls_options(self) -> dict[str, Any]:
        """The URL's TLS options as redis-py takes them (its client takes no SSL context)."""
        given = self.url.settings
        return {
            "ssl": True,
            "ssl_ca_certs": given["ssl_ca_certs"],
            "ssl_certfile": given["ssl_certfile"],
            "ssl_keyfile": given["ssl_keyfile"],
            "ssl_cert_reqs": given["ssl_cert_reqs"],
            "ssl_check_hostname": given["ssl_check_hostname"] and given["ssl_cert_reqs"] != "none",
        }

    async def load_scripts(self) -> None:
        """Load every script (again: a restarted server has none)."""
        for body in SCRIPTS.values():
            await self.client.script_load(PRELUDE + body)

    async def eval(
        self, script: str, *args: Any, fallback: type[PolybusError] = ConnectionFailed
    ) -> Any:
        """Run one of the Lua scripts with the key prefix in front of ``args``."""
        client = self.client
        sha = self._shas[script]
        try:
            async with self._script_slots:
                try:
                    return await client.evalsha(sha, 0, self.prefix, *args)
                except redis_errors.NoScriptError:
                    await self.load_scripts()
                    return await client.evalsha(sha, 0, self.prefix, *args)
        except _ERRORS as exc:
            raise translate(exc, fallback, f"Redis at {self.url.redacted()} ({script})") from exc

    # -- connection lifecycle ---------------------------------------------------------------

    async def connect(self) -> None:
        if self._endpoint is not None and importlib.util.find_spec("hiredis") is None:
            raise MissingDependency(
                "the redis:// transport parses replies with hiredis; run: pip install "
                "'polybus[redis]'"
            )
        self._client = self._new_client()
        self._publisher = Publisher(self, self.new_link())
        self._ack_link = self.new_link()
        try:
            await self.load_scripts()
            await self._beat()
            if self.url.scheme == "fakeredis":
                self.capabilities = FAKEREDIS_CAPABILITIES
            else:
                await self._check_persistence()
        except _ERRORS as exc:
            await self._drop_client()
            endpoint = self._endpoint
            where = f"{endpoint.host}:{endpoint.port}" if endpoint else self.url.redacted()
            why = why_not_connected(exc, where, endpoint.db if endpoint else 0)
            raise ConnectionFailed(
                f"cannot connect to Redis at {self.url.redacted()}: {why}"
            ) from exc
        except PolybusError:
            await self._drop_client()
            raise
        self._start_heartbeat()

    async def _check_persistence(self) -> None:
        try:
            config = await self.client.config_get("appendonly")
        except redis_errors.ResponseError:  # CONFIG is disabled on some managed servers
            return
        if config.get("appendonly") not in ("yes", b"yes"):
            self.capabilities = replace(
                self.capabilities,
                persistence=False,
                reason="this Redis server runs without its append-only file (appendonly no): "
                "a restart loses what was written since the last snapshot",
            )

    async def _beat(self) -> None:
        """The first heartbeat, on the loop: register this connection, learn the epoch."""
        asked = time.time() * 1000
        known, epoch, server_ms = await self.eval(
            "heartbeat", self.conn_id, int(self.settings.heartbeat * 1000)
        )
        self._on_beat((bool(known), epoch, int(server_ms) - (asked + time.time() * 1000) / 2))

    def _start_heartbeat(self) -> None:
        client = self._new_sync_client()
        sha, script = self._shas["heartbeat"], PRELUDE + SCRIPTS["heartbeat"]
        ttl_ms = int(self.settings.heartbeat * 1000)

        def send() -> Beat:
            return beat(client, sha, script, self.prefix, self.conn_id, ttl_ms)

        self._heartbeat = HeartbeatThread(
            send,
            self.settings.heartbeat / 3,
            self._on_beat,
            asyncio.get_running_loop(),
            f"polybus-redis-heartbeat-{self.conn_id}",
        )
        self._heartbeat_client = client
        self._heartbeat.start()

    def _on_beat(self, result: Beat | BaseException) -> None:
        """What a heartbeat learnt: the server's clock; a lost or restored connection (one
        line each); a server that restarted or reaped this connection (declare again)."""
        where = self.url.redacted()
        if isinstance(result, BaseException):
            if not self._beat_failing:
                self._beat_failing = True
                log.warning("lost the connection to %s (%r); reconnecting", where, result)
            return
        if self._beat_failing:
            self._beat_failing = False
            log.warning("reconnected to %s", where)
        known, epoch, self.clock_offset_ms = result
        changed = self._epoch is not None and (epoch != self._epoch or not known)
        self._epoch = epoch
        if changed and not self._closed:
            log.warning("Redis at %s restarted or reaped this connection; declaring again", where)
            restoring = asyncio.ensure_future(self._restore())
            self._restoring.add(restoring)
            restoring.add_done_callback(self._restoring.discard)

    async def _restore(self) -> None:
        steps: list[tuple[str, Any]] = []
        for name, (kind, durable) in self._exchanges.items():
            steps.append((name, self._declare_exchange(name, kind, durable)))
        for name, options in self._queues.items():
            steps.append((name, self._declare_queue(name, options)))
        for queue, exchange, key in self._bindings:
            steps.append((queue, self.eval("bind", queue, exchange, key, "1")))
        for consumer in self._consumers.values():
            steps.append((consumer.queue, self.eval("consume", self.conn_id, consumer.queue)))
        for what, step in steps:
            try:
                await step
            except PolybusError as exc:
                log.error("could not restore %r on %s: %s", what, self.url.redacted(), exc)

    async def close(self) -> None:
        if self._closed or self._client is None:
            self._closed = True
            return
        await self._stop_heartbeat()
        for consumer in list(self._consumers.values()):
            await consumer.stop()
        if self._publisher is not None:
            await self._publisher.drain()
        if self._acking is not None:
            with contextlib.suppress(asyncio.CancelledError, PolybusError):
                await self._acking
        try:
            await self.eval("release", self.conn_id)
        except PolybusError as exc:
            log.warning("could not say goodbye to %s: %s", self.url.redacted(), exc)
        self._closed = True
        self._consumers.clear()
        await self._drop_client()

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
        await self._drop_client()

    async def _stop_heartbeat(self, *, wait: bool = True) -> None:
        """Stop the heartbeat thread; ``wait`` for it to end (not on an abort: a beat stuck on
        a hung server ends on its own, within the socket timeout)."""
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.stop()
            if wait:
                await asyncio.get_running_loop().run_in_executor(None, heartbeat.join)
                with contextlib.suppress(*_ERRORS):
                    self._heartbeat_client.close()
        for restoring in list(self._restoring):
            restoring.cancel()

    async def _drop_client(self) -> None:
        links = [self._ack_link, self._publisher.link if self._publisher else None]
        for link in links:
            if link is not None:
                await link.close()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(*_ERRORS):
                await client.aclose()

    # -- declarations -----------------------------------------------------------------------

    async def declare_queue(self, name: str, options: QueueOptions) -> None:
        await self._declare_queue(name, options)
        self._queues[name] = options

    async def _declare_queue(self, name: str, options: QueueOptions) -> None:
        described = json.dumps(asdict(options), sort_keys=True)
        ttl = "" if options.message_ttl is None else str(round(options.message_ttl * 1000))
        await self.eval(
            "declare_queue",
            self.conn_id,
            name,
            described,
            (options.max_priority or 0) + 1,
            options.dead_letter or "",
            ttl,
            "1" if options.exclusive else "0",
            "1" if options.exclusive or options.auto_delete else "0",
            "1" if options.durable else "0",
        )

    async def delete_queue(self, name: str) -> None:
        await self.eval("delete_queue", name)
        self._queues.pop(name, None)
        self._bindings = {b for b in self._bindings if b[0] != name}

    async def purge_queue(self, name: str) -> int:
        count: int = await self.eval("ready", name, "purge")
        return count

    async def queue_size(self, name: str) -> int:
        count: int = await self.eval("ready", name, "size")
        return count

    async def declare_exchange(self, name: str, kind: ExchangeKind, durable: bool) -> None:
        await self._declare_exchange(name, kind, durable)
        self._exchanges[name] = (kind, durable)

    async def _declare_exchange(self, name: str, kind: ExchangeKind, durable: bool) -> None:
        await self.eval("declare_exchange", name, kind.value, str(durable))

    async def check_exchange(self, name: str) -> None:
        try:
            exists = await self.client.exists(f"{self.prefix}x:{name}")
        except _ERRORS as exc:
            raise translate(exc, ConnectionFailed, f"Redis at {self.url.redacted()}") from exc
        if not exists:
            raise NotFound(f"exchange {name!r} does not exist on {self.url.redacted()}")

    async def delete_exchange(self, name: str) -> None:
        await self.eval("delete_exchange", name)
        self._exchanges.pop(name, None)
        self._bindings = {b for b in self._bindings if b[1] != name}

    async def bind(self, queue: str, exchange: str, key: str) -> None:
        await self.eval("bind", queue, exchange, key, "1")
        self._bindings.add((queue, exchange, key))

    async def unbind(self, queue: str, exchange: str, key: str) -> None:
        await self.eval("bind", queue, exchange, key, "0")
        self._bindings.discard((queue, exchange, key))

    # -- publishing -------------------------------------------------------------------------

    async def publish(
        self, exchange: str, key: str, envelope: Envelope, *, mandatory: bool = False
    ) -> None:
        await self._publishing().publish(exchange, [(key, (envelope,))], mandatory)

    async def publish_many(
        self, exchange: str, items: Sequence[tuple[str, Envelope]], *, mandatory: bool = False
    ) -> None:
        runs = [
            (key, [envelope for _, envelope in group])
            for key, group in itertools.groupby(items, key=lambda item: item[0])
        ]
        await self._publishing().publish(exchange, runs, mandatory)

    def _publishing(self) -> Publisher:
        self.client  # noqa: B018 - raises Closed on a closed transport
        assert self._publisher is not None
        return self._publisher

    # -- consuming --------------------------------------------------------------------------

    async def consume(
        self, queue: str, deliver: DeliverCallback, *, prefetch: int, auto_ack: bool = False
    ) -> str:
        levels = int(await self.eval("consume", self.conn_id, queue))
        tag = f"c{next(self._tags)}"
        consumer = Consumer(self, tag, queue, levels, deliver, max(1, prefetch), auto_ack)
        self._consumers[tag] = consumer
        consumer.start()
        return tag

    async def cancel(self, consumer_tag: str) -> None:
        consumer = self._consumers.pop(consumer_tag, None)
        if consumer is None:
            return
        await consumer.stop()
        if self._acking is not None:  # acks on their way are no longer held: let them land
            with contextlib.suppress(PolybusError):
                await asyncio.shield(self._acking)
        await self.eval("retire", consumer.queue, consumer.name, *consumer.held)

    async def ack(self, delivery: Delivery) -> None:
        self._ack(delivery)

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            self._ack(delivery)

    def _ack(self, delivery: Delivery) -> None:
        """Queue the ack and return, as AMQP's basic.ack does: the acks of a whole loop turn
        go out in one write. An ack that never lands means a redelivery."""
        consumer, stream, entry_id = delivery.tag
        if not consumer.auto_ack:
            consumer.settled(entry_id)
            self.queue_ack(stream, entry_id)

    def queue_ack(self, stream: str, entry_id: bytes) -> None:
        """XACK and XDEL the entry with the next round of acks."""
        self.client  # noqa: B018 - raises Closed on a closed transport
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
            except _ERRORS as exc:
                error = translate(exc, ConnectionFailed, f"Redis at {self.url.redacted()} (ack)")
                count = sum(len(ids) for ids in acks.values())
                log.warning("%d acks did not reach Redis; redelivered later: %s", count, error)

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        consumer, stream, entry_id = delivery.tag
        if consumer.auto_ack:
            return
        consumer.settled(entry_id)
        outcome = "requeue" if requeue else "reject"
        await self.eval("settle", consumer.queue, stream, entry_id, outcome)
