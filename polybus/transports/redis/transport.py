"""``redis://`` / ``rediss://`` (redis-py's asyncio client) and ``fakeredis://`` (server-less).

Queues are streams with one consumer group; exchanges, bindings and declarations are keys beside
them, changed only by the Lua scripts of ``_lua`` (layout and guarantees: ``docs/redis.md``).

Liveness: every transport is a member of the ``conns`` sorted set, scored by the deadline its
heartbeat keeps pushing forward (``?heartbeat=`` seconds, default 10). Each heartbeat also reaps
connections past their deadline: their pending entries go back to their queues, counted as
deliveries, and their exclusive queues are deleted. A consumer that is slow but alive is never
reaped, however long it holds a message.

Batching: concurrent publishes and acks are coalesced into one pipeline per event-loop turn, and
a ``publish_many`` run to one key is one script call per thousand messages.

Recovery: redis-py reconnects on the next command; consumers retry with backoff; a heartbeat that
finds the server restarted (its run id changed) or this connection reaped declares again what this
transport declared. A publish whose outcome is unknown raises ``PublishFailed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from polybus.core.errors import (
    Closed,
    ConnectionFailed,
    DeclarationConflict,
    InvalidURL,
    MissingDependency,
    NotFound,
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
    Transport,
)
from polybus.core.url import BrokerURL
from polybus.transports.redis._codec import publish_args
from polybus.transports.redis._consumer import Consumer
from polybus.transports.redis._lua import PRELUDE, SCRIPTS

log = logging.getLogger("polybus.redis")

BATCH = 1000  # messages per PUBLISH script call
CONCURRENT_SCRIPTS = 32  # script calls in flight at once (each takes a pooled connection)
MAX_CONNECTIONS = 10_000  # idle consumers each hold one, blocked in XREAD
_ERRORS: tuple[type[BaseException], ...] = (redis_errors.RedisError, OSError)


@dataclass(frozen=True)
class Settings:
    """What the URL says beyond host and database."""

    prefix: str
    heartbeat: float
    connect_timeout: float


def settings_from_url(url: BrokerURL) -> Settings:
    options = url.options
    try:
        heartbeat = float(options.get("heartbeat", "10"))
        connect_timeout = float(options.get("connect_timeout", "2"))
    except ValueError as exc:
        raise InvalidURL(f"{url.redacted()!r}: heartbeat and connect_timeout are seconds") from exc
    if heartbeat <= 0:
        raise InvalidURL(f"{url.redacted()!r}: heartbeat must be positive")
    base = options.get("prefix", "polybus")
    prefix = f"{base}:{url.namespace}:" if url.namespace else f"{base}:"
    return Settings(prefix, heartbeat, connect_timeout)


_fake_servers: dict[str, Any] = {}


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


def _translate(exc: BaseException, fallback: type[PolybusError], what: str) -> PolybusError:
    """A redis-py error as the polybus error it means."""
    message = str(exc)
    if isinstance(exc, redis_errors.ResponseError):
        for prefix, kind in (
            ("NOTFOUND ", NotFound),
            ("CONFLICT ", DeclarationConflict),
            ("UNROUTABLE ", Unroutable),
        ):
            if message.startswith(prefix):
                return kind(message[len(prefix) :])
    return fallback(f"{what}: {exc!r}")


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


@dataclass(eq=False)
class _Outgoing:
    """Messages for one exchange and key, published by one script call."""

    exchange: str
    key: str
    mandatory: bool
    args: list[bytes | str]
    count: int
    done: asyncio.Future[None]
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


def _merge(round_: list[_Outgoing]) -> list[_Outgoing]:
    """Consecutive publishes to the same exchange and key as one script call each: they route
    the same way, so they share one outcome."""
    merged: list[_Outgoing] = []
    for batch in round_:
        last = merged[-1] if merged else None
        if (
            last is not None
            and (last.exchange, last.key, last.mandatory)
            == (batch.exchange, batch.key, batch.mandatory)
            and last.count + batch.count <= BATCH
        ):
            last.args.extend(batch.args[3:])
            last.count += batch.count
            last.waiters.append(batch.done)
        else:
            merged.append(
                _Outgoing(
                    batch.exchange,
                    batch.key,
                    batch.mandatory,
                    list(batch.args),
                    batch.count,
                    batch.done,
                    [batch.done],
                )
            )
    return merged


class RedisTransport(Transport):
    """Streams for queues, Lua for routing, a heartbeat for liveness."""

    capabilities = CAPABILITIES

    def __init__(self, url: BrokerURL) -> None:
        super().__init__(url)
        self.settings = settings_from_url(url)
        self.prefix = self.settings.prefix
        self.conn_id = os.urandom(8).hex()
        self._client: Redis | None = None
        self._shas = {
            name: hashlib.sha1((PRELUDE + body).encode()).hexdigest()
            for name, body in SCRIPTS.items()
        }
        self._closed = False
        self._script_slots = asyncio.Semaphore(CONCURRENT_SCRIPTS)
        self._epoch: bytes | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._queues: dict[str, QueueOptions] = {}
        self._exchanges: dict[str, tuple[ExchangeKind, bool]] = {}
        self._bindings: set[tuple[str, str, str]] = set()
        self._consumers: dict[str, Consumer] = {}
        self._tags = itertools.count(1)
        self._outbox: list[_Outgoing] = []
        self._publishing: asyncio.Task[None] | None = None
        self._acks: dict[str, list[bytes]] = {}
        self._acking: asyncio.Task[None] | None = None

    # -- plumbing -------------------------------------------------------------------------

    @property
    def client(self) -> Redis:
        if self._closed or self._client is None:
            raise Closed(f"the transport to {self.url.redacted()} is closed")
        return self._client

    def stream_key(self, queue: str, level: int) -> str:
        return f"{self.prefix}s:{queue}:{level}"

    def _new_client(self) -> Redis:
        url = self.url
        timeout = self.settings.connect_timeout
        common: dict[str, Any] = {
            "socket_connect_timeout": timeout,
            "socket_timeout": max(10.0, timeout),
            "retry": Retry(NoBackoff(), 1),
            "max_connections": MAX_CONNECTIONS,
        }
        if url.scheme == "fakeredis":
            import fakeredis

            name = url.raw.split("://", 1)[1].split("?", 1)[0].strip("/")
            client: Redis = fakeredis.FakeAsyncRedis(server=_fake_server(name), **common)
            return client
        try:
            db = int(url.path.strip("/") or "0")
        except ValueError as exc:
            raise InvalidURL(f"{url.redacted()!r}: the path must be a database number") from exc
        return Redis(
            host=url.host or "localhost",
            port=url.port or 6379,
            db=db,
            username=url.username,
            password=url.password,
            ssl=url.scheme == "rediss",
            **common,
        )

    async def _load_scripts(self) -> None:
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
                    await self._load_scripts()
                    return await client.evalsha(sha, 0, self.prefix, *args)
        except _ERRORS as exc:
            raise _translate(exc, fallback, f"Redis at {self.url.redacted()} ({script})") from exc

    # -- connection lifecycle ---------------------------------------------------------------

    async def connect(self) -> None:
        self._client = self._new_client()
        try:
            await self._load_scripts()
            await self._beat()
            if self.url.scheme == "fakeredis":
                self.capabilities = FAKEREDIS_CAPABILITIES
            else:
                await self._check_persistence()
        except _ERRORS as exc:
            await self._drop_client()
            raise ConnectionFailed(
                f"cannot connect to Redis at {self.url.redacted()}: {exc!r}"
            ) from exc
        except PolybusError:
            await self._drop_client()
            raise
        self._heartbeat = asyncio.ensure_future(self._heartbeat_loop())

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
        """Refresh this connection's deadline; restore declarations if they were lost."""
        known, epoch = await self.eval(
            "heartbeat", self.conn_id, int(self.settings.heartbeat * 1000)
        )
        first = self._epoch is None
        changed = not first and (epoch != self._epoch or not known)
        self._epoch = epoch
        if changed:
            log.warning(
                "Redis at %s restarted or reaped this connection; declaring again",
                self.url.redacted(),
            )
            await self._restore()

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._beat()
            except PolybusError as exc:
                log.warning("heartbeat to %s failed: %s", self.url.redacted(), exc)

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
        for task in (self._publishing, self._acking):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, PolybusError):
                    await task
        try:
            await self.eval("release", self.conn_id)
        except PolybusError as exc:
            log.warning("could not say goodbye to %s: %s", self.url.redacted(), exc)
        self._closed = True
        self._consumers.clear()
        await self._drop_client()

    async def abort(self) -> None:
        self._closed = True
        await self._stop_heartbeat()
        for consumer in list(self._consumers.values()):
            await consumer.stop(hard=True)
        for task in (self._publishing, self._acking):
            if task is not None:
                task.cancel()
        self._consumers.clear()
        await self._drop_client()

    async def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(*_ERRORS):
                await client.aclose()

    # -- declarations -----------------------------------------------------------------------

    async def declare_queue(self, name: str, options: QueueOptions) -> None:
        await self._declare_queue(name, options)
        self._queues[name] = options

    async def _declare_queue(self, name: str, options: QueueOptions) -> None:
        described = ", ".join(f"{f.name}={getattr(options, f.name)}" for f in fields(options))
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
        await self._send([self._outgoing(exchange, key, mandatory, [envelope])])

    async def publish_many(
        self, exchange: str, items: Sequence[tuple[str, Envelope]], *, mandatory: bool = False
    ) -> None:
        batches: list[_Outgoing] = []
        for key, group in itertools.groupby(items, key=lambda item: item[0]):
            envelopes = [envelope for _, envelope in group]
            for start in range(0, len(envelopes), BATCH):
                batch = envelopes[start : start + BATCH]
                batches.append(self._outgoing(exchange, key, mandatory, batch))
        await self._send(batches)

    def _outgoing(
        self, exchange: str, key: str, mandatory: bool, envelopes: Sequence[Envelope]
    ) -> _Outgoing:
        args: list[bytes | str] = [exchange, key, "1" if mandatory else "0"]
        for envelope in envelopes:
            args.extend(publish_args(envelope))
        done = asyncio.get_running_loop().create_future()
        return _Outgoing(exchange, key, mandatory, args, len(envelopes), done)

    async def _send(self, batches: list[_Outgoing]) -> None:
        """Queue the batches for the publishing task and wait for every one's outcome."""
        self.client  # noqa: B018 - raises Closed on a closed transport
        self._outbox.extend(batches)
        if self._publishing is None or self._publishing.done():
            self._publishing = asyncio.ensure_future(self._publish_loop())
        for batch in batches:
            await batch.done

    async def _publish_loop(self) -> None:
        """Send everything queued, one pipeline per round, until the outbox stays empty."""
        while self._outbox:
            round_, self._outbox = self._outbox, []
            try:
                await self._publish_round(round_)
            except PolybusError as exc:
                for batch in round_:
                    if not batch.done.done():
                        batch.done.set_exception(exc)
            except asyncio.CancelledError:
                for batch in round_ + self._outbox:
                    if not batch.done.done():
                        batch.done.set_exception(PublishFailed("the transport was aborted"))
                raise

    async def _publish_round(self, round_: list[_Outgoing]) -> None:
        sha = self._shas["publish"]
        where = f"Redis at {self.url.redacted()} (publish)"
        todo = _merge(round_)
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            for batch in todo:
                pipe.evalsha(sha, 0, self.prefix, *batch.args)
            try:
                results = await pipe.execute(raise_on_error=False)
            except _ERRORS as exc:
                raise PublishFailed(f"{where}: the outcome is unknown: {exc!r}") from exc
            missing: list[_Outgoing] = []
            for batch, result in zip(todo, results, strict=True):
                if isinstance(result, redis_errors.NoScriptError) and attempt == 0:
                    missing.append(batch)
                elif isinstance(result, BaseException):
                    error = _translate(result, PublishFailed, where)
                    for done in batch.waiters:
                        if not done.done():
                            done.set_exception(error)
                else:
                    for done in batch.waiters:
                        if not done.done():
                            done.set_result(None)
            if not missing:
                return
            try:
                await self._load_scripts()
            except _ERRORS as exc:
                raise PublishFailed(f"{where}: {exc!r}") from exc
            todo = missing

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
        await self.ack_many((delivery,))

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Queue the acks and return, as AMQP's basic.ack does: the acks of a whole loop
        iteration go out in one pipeline. An ack that never lands means a redelivery."""
        queued = False
        for delivery in deliveries:
            consumer, stream, entry_id = delivery.tag
            if consumer.auto_ack:
                continue
            consumer.settled(entry_id)
            self._acks.setdefault(stream, []).append(entry_id)
            queued = True
        if not queued:
            return
        self.client  # noqa: B018 - raises Closed on a closed transport
        if self._acking is None or self._acking.done():
            self._acking = asyncio.ensure_future(self._ack_loop())

    async def _ack_loop(self) -> None:
        """XACK and XDEL everything acked meanwhile, one pipeline per round."""
        while self._acks:
            acks, self._acks = self._acks, {}
            pipe = self.client.pipeline(transaction=False)
            for stream, ids in acks.items():
                pipe.xack(stream, "g", *ids)
                pipe.xdel(stream, *ids)
            try:
                await pipe.execute()
            except _ERRORS as exc:
                error = _translate(exc, ConnectionFailed, f"Redis at {self.url.redacted()} (ack)")
                count = sum(len(ids) for ids in acks.values())
                log.warning("%d acks did not reach Redis; redelivered later: %s", count, error)

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        consumer, stream, entry_id = delivery.tag
        if consumer.auto_ack:
            return
        consumer.settled(entry_id)
        outcome = "requeue" if requeue else "reject"
        await self.eval("settle", consumer.queue, stream, entry_id, outcome)
