"""``nats://`` and ``tls://`` / ``nats+tls://``: NATS with JetStream (layout: ``docs/nats.md``).

A queue is a stream capturing one subject, with work-queue retention and one durable pull
consumer (``_consumer.PullConsumer``); an exclusive queue is its owner's plain subscription to
that subject (``_consumer.TransientQueue``). Exchanges and bindings, and every queue's options,
are records in a key-value bucket (``_registry``) that every connection shares; a publish to an
exchange reads its record and routes on this side (``polybus.core.topic`` for topics), one
JetStream publish per queue it reaches.

Liveness: a message's ack wait is ``?heartbeat=`` seconds (default 10): a crashed consumer's
messages go to another consumer after that; a live one tells the server every third of it, from
a thread of its own (``_liveness``), that its messages are still in progress, however long its
handlers take.

Recovery: nats-py reconnects by itself and subscribes again; on a reconnect the transport
declares its ``Topology`` again (a restarted server may have lost memory streams) and its
consumers ask again for what the lost pull requests asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, replace
from typing import Any, TypeVar

from nats import errors as nats_errors
from nats.aio.client import Client
from nats.js import api
from nats.js import errors as js_errors

from polybus.core.deadletters import EXPIRED, dead_letter_headers
from polybus.core.errors import (
    CapabilityMissing,
    Closed,
    ConfigurationError,
    ConnectionFailed,
    InvalidURL,
    NotFound,
    PolybusError,
    PublishFailed,
    SerializationError,
    Unroutable,
)
from polybus.core.options import TLS, UrlOption, count, seconds, text, tls_context
from polybus.core.tasks import cancelled
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
from polybus.transports.nats import _connection as connection
from polybus.transports.nats._codec import decode, encode, history, size
from polybus.transports.nats._consumer import PROBE, PullConsumer, TransientQueue, expired
from polybus.transports.nats._delays import DUE_HEADER, DelayMover, delay_stream_config
from polybus.transports.nats._errors import (
    ERRORS,
    FAILURES,
    telling,
    translate,
    why_not_connected,
)
from polybus.transports.nats._liveness import KeepAlive
from polybus.transports.nats._names import CONSUMER, PREFIX, Names
from polybus.transports.nats._registry import Record, Registry

log = logging.getLogger("polybus.nats")

T = TypeVar("T")

UNANSWERED_SHARE = 0.8
"""Of ``operation_timeout``, how long a publish to an existing stream nobody answers for (a
cluster electing its leader) is sent again before it fails."""

URL_OPTIONS = (
    UrlOption(
        "heartbeat",
        seconds(),
        10.0,
        "seconds after which a crashed consumer's messages go to another consumer: JetStream's"
        " ack wait, which a live consumer keeps renewing (default 10)",
    ),
    UrlOption("connect_timeout", seconds(), 2.0, "seconds to connect (default 2)"),
    UrlOption("prefix", text, "polybus", "the first part of every stream, subject and bucket name"),
    UrlOption(
        "replicas",
        count(1, 5),
        None,
        "copies JetStream keeps of each queue's stream and of the topology, on as many servers"
        " of a cluster (default: one per server in the URL, at most 3)",
    ),
    *TLS,
)
TLS_SCHEMES = ("tls", "nats+tls")

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
)


class NatsTransport(Transport):
    """Broker primitives on NATS JetStream (see the module's docstring)."""

    url_options = URL_OPTIONS

    @classmethod
    def takes_several_hosts(cls, url: BrokerURL) -> bool:
        return True  # the servers of a cluster; nats-py connects to any live one

    @classmethod
    def capabilities_for(cls, url: BrokerURL) -> Capabilities:
        return CAPABILITIES

    def __init__(self, url: BrokerURL) -> None:
        super().__init__(url)
        given = self.url.settings
        if not PREFIX.fullmatch(given["prefix"]):
            raise InvalidURL(
                f"{self.url.redacted()!r}: prefix must be letters, digits and '-' only"
            )
        self._tls = None
        if self.url.scheme in TLS_SCHEMES:
            try:
                self._tls = tls_context(given)
            except ConfigurationError as exc:
                raise InvalidURL(f"{self.url.redacted()!r}: {exc}") from exc
        elif any(name.startswith("ssl_") for name in self.url.options):
            raise InvalidURL(f"{self.url.redacted()!r}: ssl_ options need a tls:// URL")
        self._heartbeat: float = given["heartbeat"]
        self._connect_timeout: float = given["connect_timeout"]
        self._names = Names(given["prefix"])
        servers = self.url.hosts or (("localhost", None),)
        self._servers = [f"{host}:{port or 4222}" for host, port in servers]
        self._where = ",".join(self._servers)
        self._replicas: int = given["replicas"] or min(len(servers), 3)
        self._nc: Any = None
        self._js: Any = None
        self._registry: Registry | None = None
        self._topology = Topology()
        self._pulls: dict[str, PullConsumer] = {}  # by tag, until cancelled and settled
        self._ending: set[PullConsumer] = set()  # cancelled, not yet ended
        self._reached: set[str] = set()  # queues a publish reached on this connection
        self._transients: dict[str, TransientQueue] = {}  # by queue name
        self._consuming_transient: dict[str, TransientQueue] = {}  # by tag
        self._options: dict[str, QueueOptions] = {}  # queues' options, as read or declared
        self._tags = itertools.count(1)
        self._alive: KeepAlive | None = None
        self._replaying: asyncio.Task[None] | None = None
        self._reaping: set[str] = set()
        self._chores: set[asyncio.Task[None]] = set()
        self._last_error: BaseException | None = None
        self._closed = False
        namespace = given["namespace"]
        delays = f"{namespace}.~delay" if namespace else "~delay"  # no user name has a ~
        self._delay_stream = self._names.stream(delays)
        self._delay_subject = self._names.subject(delays)
        self._mover: DelayMover | None = None
        self._mover_starting: asyncio.Task[None] | None = None
        self._mover_lock = asyncio.Lock()

    # -- connection -------------------------------------------------------------------------

    def _connection_options(self) -> dict[str, Any]:
        url = self.url
        return connection.options(
            self._servers, url.username, url.password, self._tls, self._connect_timeout
        )

    async def connect(self) -> None:
        nc = self._nc = Client()
        options = self._connection_options()
        options.update(
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        try:  # bounded: with unlimited reconnects, a first connect would try forever
            await asyncio.wait_for(nc.connect(**options), self._connect_timeout + 1.0)
            self._js = nc.jetstream(timeout=self.url.settings["operation_timeout"])
            names = self._names

            async def purge(key: str) -> None:
                await self._js.purge_stream(
                    names.topology_stream, subject=names.record_subject(key)
                )

            self._registry = Registry(await self._bucket(), self._names, js_errors, purge)
        except FAILURES as exc:
            await connection.disconnect(nc)
            if isinstance(exc, PolybusError):
                raise
            why = why_not_connected(self._last_error or exc, self._where)
            raise ConnectionFailed(f"cannot connect to {self.url.redacted()}: {why}") from None
        self._alive = KeepAlive(self._renewing_connection, self._held, self._renewal_interval)
        self._alive.start()
        if await self._stream_named(self._delay_stream):
            self._start_mover_soon()  # what others delayed, released even once they are gone

    async def _stop(self, consumer: PullConsumer) -> None:
        """Stop a pull consumer, kept (to be halted by a close) until it has ended."""
        ending = consumer.stopping()
        self._ending.add(consumer)
        ending.add_done_callback(lambda _: self._ending.discard(consumer))
        await consumer.stop()

    def _consumers(self) -> list[PullConsumer]:
        """Every pull consumer still running something: those not cancelled, and the
        cancelled ones not yet ended."""
        return [*self._pulls.values(), *(c for c in self._ending if c not in self._pulls.values())]

    async def _renewing_connection(self) -> Client:
        """The keep-alive thread's own connection (opened on its loop)."""
        nc = Client()
        try:
            await asyncio.wait_for(nc.connect(**self._connection_options()), self._connect_timeout)
        except BaseException:
            await connection.disconnect(nc)
            raise
        return nc

    def _renewal_interval(self) -> float:
        """A third of the shortest ack wait among this transport's consumers (read from the
        keep-alive thread)."""
        try:
            waits = [consumer.ack_wait for consumer in self._consumers()]
        except RuntimeError:  # changed while being copied: this round, the transport's own
            waits = []
        return min([self._heartbeat, *waits]) / 3

    def _held(self) -> list[str]:
        """What this transport's consumers hold (called from the keep-alive thread)."""
        return [reply for consumer in self._consumers() for reply in consumer.held]

    async def _bucket(self) -> Any:
        """The topology bucket, created by the first connection of a prefix."""
        bucket = self._names.topology_bucket
        try:
            return await self._js.key_value(bucket)
        except js_errors.BucketNotFoundError:
            pass
        except js_errors.ServiceUnavailableError as exc:
            raise ConnectionFailed(f"JetStream is not enabled on {self._where} ({exc})") from exc
        config = api.KeyValueConfig(
            bucket=bucket, history=1, storage=api.StorageType.FILE, replicas=self._replicas
        )
        return await self._js.create_key_value(config)

    async def _on_error(self, exc: Exception) -> None:
        """nats-py's errors between calls: the most telling is kept to say why a connect
        failed (a refused password, not the reset that follows it)."""
        if self._last_error is None or not telling(self._last_error):
            self._last_error = exc
        log.debug("NATS at %s: %r", self._where, exc)

    async def _on_disconnected(self) -> None:
        if not self._closed:
            log.warning(
                "lost the connection to %s (%r); reconnecting", self._where, self._last_error
            )

    async def _on_reconnected(self) -> None:
        self._reached.clear()  # another server, which may know less
        if not self._closed:
            log.warning("reconnected to %s", connection.server_of(self._nc) or self._where)
        if self._closed or (self._replaying is not None and not self._replaying.done()):
            return
        self._replaying = asyncio.ensure_future(self._replay())

    async def _replay(self) -> None:
        """Declare everything again (a restarted server may have lost memory streams) and have
        every consumer ask again for what its lost pull request asked for."""
        for attempt in range(20):
            try:
                await self._topology.replay(
                    exchange=self.declare_exchange,
                    queue=self._declare_queue,
                    binding=self._bind,
                    where=self._where,
                )
                return
            except ConnectionFailed:
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))

    async def close(self) -> None:
        if self._closed or self._nc is None:
            return
        self._closed = True
        await self._stop_background()
        try:  # within half the time the core gives a close, so that a stalled one ends in it
            budget = self.url.settings["operation_timeout"] / 2
            await asyncio.wait_for(self._goodbye(), budget)
        except FAILURES:
            connection.drop_socket(self._nc)
        finally:
            for consumer in self._consumers():  # what the goodbye did not reach
                await consumer.halt()
        await self._disconnect()

    async def _goodbye(self) -> None:
        """Give held messages back, delete this connection's exclusive queues, flush."""
        for consumer in list(self._pulls.values()):
            await consumer.stop()
            await consumer.give_back()
        for name in list(self._transients):
            await self._delete_transient(name)
        if self._chores:
            await asyncio.wait(self._chores)
        await self._nc.flush(timeout=self._connect_timeout)

    async def abort(self) -> None:
        """A crash: no messages given back, no records deleted; the server redelivers this
        connection's messages after their ack wait, and its exclusive queues' subscriptions
        end with the connection."""
        self._closed = True
        await self._stop_background()
        for consumer in self._consumers():
            await consumer.halt()
        if self._nc is not None:
            connection.drop_socket(self._nc)
            await self._disconnect()

    async def _disconnect(self) -> None:
        for chore in list(self._chores):
            chore.cancel()
            await cancelled(chore)
        await connection.disconnect(self._nc)

    async def _stop_background(self) -> None:
        await cancelled(self._mover_starting)
        if self._mover is not None:
            await self._mover.stop()
        if self._alive is not None:
            self._alive.stop()
        if self._replaying is not None:
            self._replaying.cancel()
            await cancelled(self._replaying)

    async def _call(self, work: Awaitable[T], what: str) -> T:
        """Run a nats-py call, its errors as polybus's."""
        if self._closed:
            if asyncio.iscoroutine(work):
                work.close()  # never started: nothing to wait for
            raise Closed(f"the NATS transport of {self._where} is closed")
        try:
            return await work
        except ERRORS as exc:
            raise translate(exc, ConnectionFailed, what) from exc

    @property
    def _records(self) -> Registry:
        assert self._registry is not None, "connect() first"
        return self._registry

    # -- queues -----------------------------------------------------------------------------

    async def declare_queue(self, name: str, options: QueueOptions) -> None:
        await self._declare_queue(name, options)
        self._topology.queue_declared(name, options)

    async def _declare_queue(self, name: str, options: QueueOptions) -> None:
        what = f"declaring queue {name!r}"
        if options.exclusive and name not in self._transients:
            # listening first: a publisher finding the record and nobody answering reaps it
            queue = TransientQueue(
                self._nc, name, self._names.subjects(name), self._dead_letter_of(name)
            )
            await self._call(queue.open(), what)
            self._transients[name] = queue
        try:
            record = {"options": asdict(options)}
            await self._call(self._records.declare_queue(name, record), what)
        except PolybusError:
            if options.exclusive:  # not ours after all: stop listening to its subjects
                await self._transients.pop(name).close()
            raise
        self._options[name] = options
        if not options.exclusive:
            for level in range((options.max_priority or 0) + 1):
                await self._declare_stream(name, level, options)

    async def _declare_stream(self, name: str, level: int, options: QueueOptions) -> None:
        what = f"declaring queue {name!r}"
        stream = self._names.stream(name, level)
        storage = api.StorageType.FILE if options.durable else api.StorageType.MEMORY
        config = api.StreamConfig(
            name=stream,
            subjects=self._names.level_subjects(name, level, options.max_priority),
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=storage,
            num_replicas=self._replicas,
            description=f"polybus queue {name}" + (f", priority {level}" if level else ""),
        )
        await self._call(self._js.add_stream(config), what)
        consumer = api.ConsumerConfig(
            durable_name=CONSUMER,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self._heartbeat,
            max_deliver=-1,
            max_ack_pending=-1,
        )
        try:
            await self._once_known(lambda: self._js.add_consumer(stream, consumer))
        except js_errors.APIError as exc:
            if exc.err_code not in (10013, 10148):  # another connection's, with its ack wait
                raise translate(exc, ConnectionFailed, what) from exc
        except ERRORS as exc:
            raise translate(exc, ConnectionFailed, what) from exc

    async def _once_known(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run a call on a stream just created, again while the server answers that there is
        no such stream: in a cluster, the server that takes the call may not have heard of it
        yet. Up to ``UNANSWERED_SHARE`` of ``operation_timeout``."""
        bound = time.monotonic() + self.url.settings["operation_timeout"] * UNANSWERED_SHARE
        pause = 0.02
        while True:
            try:
                return await call()
            except js_errors.NotFoundError:
                if time.monotonic() + pause > bound:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)

    async def delete_queue(self, name: str) -> None:
        what = f"deleting queue {name!r}"
        options = self._options.get(name)
        if name in self._transients:
            await self._delete_transient(name)
        elif options is not None and options.exclusive:
            pass  # deleted already, when its consumer left
        else:
            record = await self._call(self._records.delete_queue(name), what)
            levels = (record["options"]["max_priority"] or 0) + 1 if record else 1
            for level in range(levels):
                try:
                    await self._js.delete_stream(self._names.stream(name, level))
                except js_errors.NotFoundError:
                    pass
                except ERRORS as exc:
                    raise translate(exc, ConnectionFailed, what) from exc
        self._options.pop(name, None)
        for tag in [tag for tag, pull in self._pulls.items() if pull.queue == name]:
            await self._stop(self._pulls.pop(tag))
        self._topology.queue_deleted(name)

    async def _delete_transient(self, name: str) -> None:
        queue = self._transients.pop(name)
        for tag in [tag for tag, q in self._consuming_transient.items() if q is queue]:
            del self._consuming_transient[tag]
        await queue.close()
        # its record in the background: on a stalled connection this must not hold up a
        # close, and a record left behind is reaped by whoever next finds nobody listening
        self._chore(self._records.delete_queue(name), f"deleting queue {name!r}")

    async def purge_queue(self, name: str) -> int:
        if name in self._transients:
            return self._transients[name].purge()
        what = f"purging queue {name!r}"
        count = 0
        for stream in await self._streams(name):
            info = await self._call(self._js.consumer_info(stream, CONSUMER), what)
            await self._call(self._js.purge_stream(stream), what)  # says only that it did
            count += int(info.num_pending)
        return count

    async def _streams(self, name: str) -> list[str]:
        """The streams of a queue, highest priority level first."""
        try:
            levels = ((await self._options_of(name)).max_priority or 0) + 1
        except NotFound:
            levels = 1  # a stream without a record: adopted from elsewhere, or half deleted
        return [self._names.stream(name, level) for level in reversed(range(levels))]

    async def queue_size(self, name: str) -> int:
        return (await self.queue_stats(name)).ready

    async def queue_stats(self, name: str) -> QueueStats:
        """Ready: JetStream's ``num_pending``, what no consumer has had — a returned message
        included, as a copy stored again (``_consumer.PullConsumer._return``). Unacked: its
        ``num_ack_pending``, delivered and not acked, a crashed consumer's messages included
        until another consumer has them.

        Consumers: ``None``. JetStream counts the pull requests waiting (``num_waiting``), not
        the consumers: one between two requests, or reading priority levels without waiting,
        is not counted. And polybus's liveness renews held messages without saying whose, so
        nothing tells how many consumers there are. An exclusive queue of this connection
        lives here, its counts and its one consumer (or none) known exactly.
        """
        transient = self._transients.get(name)
        if transient is not None:
            return transient.stats()
        if await self._exclusive_elsewhere(name):
            return QueueStats(name, 0)  # only its owner sees its messages
        ready = unacked = 0
        for stream in await self._streams(name):
            info = await self._level(name, stream)
            ready += int(info.num_pending)
            unacked += int(info.num_ack_pending)
        return QueueStats(name, ready, unacked)

    async def _exclusive_elsewhere(self, name: str) -> bool:
        """Whether ``name`` is another connection's exclusive queue (no stream: its messages
        are in its owner).

        :raises NotFound: it was, and its owner is gone (its records are reaped).
        """
        record = await self._call(self._records.queue(name), f"reading queue {name!r}")
        if record is None or not record["options"]["exclusive"]:
            return False
        if await self._reaped(name):
            raise NotFound(f"queue {name!r} does not exist on {self._where}")
        return True

    async def _level(self, name: str, stream: str) -> Any:
        """The durable consumer's info on one stream of the queue, once the expired messages
        at the stream's head are dead-lettered."""
        info = await self._consumer_info(name, stream)
        first = info.delivered.stream_seq + 1
        if info.num_pending and await self._expire_head(name, stream, first):
            info = await self._consumer_info(name, stream)
        return info

    async def _consumer_info(self, name: str, stream: str) -> Any:
        """The durable consumer's info on one stream of the queue (``NotFound``: no queue)."""
        what = f"reading queue {name!r}"
        try:
            return await self._call(self._js.consumer_info(stream, CONSUMER), what)
        except NotFound:
            raise NotFound(f"queue {name!r} does not exist on {self._where}") from None

    async def queue_names(self) -> list[str]:
        """The queues with a record in the topology bucket (the delay stream has none); an
        exclusive queue of another connection while its owner answers (one gone is reaped)."""
        records = await self._call(self._records.queues(), "listing queues")

        async def gone(name: str) -> bool:
            exclusive = records[name]["options"]["exclusive"]
            return exclusive and name not in self._transients and await self._reaped(name)

        names = sorted(records)
        dropped = await asyncio.gather(*(gone(name) for name in names))
        return [name for name, out in zip(names, dropped, strict=True) if not out]

    async def peek(self, name: str, limit: int) -> list[Delivery]:
        """Read with JetStream's get by stream sequence, which no consumer sees: on each
        stream, highest priority level first, the messages after the durable consumer's
        delivered position (those before are delivered and unacked; a returned message is a
        copy after it), not the expired ones.

        :raises CapabilityMissing: another connection's exclusive queue, whose messages only
            its owner holds.
        """
        transient = self._transients.get(name)
        if transient is not None:
            return transient.peek(limit)
        if await self._exclusive_elsewhere(name):
            raise CapabilityMissing(
                f"queue {name!r} is another connection's exclusive queue: its messages are"
                " held by its owner, not stored by NATS, so only its owner could read them"
            )
        message_ttl = (await self._options_of(name)).message_ttl
        peeked: list[Delivery] = []
        for stream in await self._streams(name):
            first = (await self._consumer_info(name, stream)).delivered.stream_seq + 1
            await self._peek_stream(name, stream, first, message_ttl, peeked, limit)
        return peeked

    async def _peek_stream(
        self,
        name: str,
        stream: str,
        seq: int,
        message_ttl: float | None,
        peeked: list[Delivery],
        limit: int,
    ) -> None:
        """Add to ``peeked``, up to ``limit``, the live messages of one of the queue's streams
        from ``seq`` on, as a consumer would receive them (``tag`` ``None``)."""
        while len(peeked) < limit and (stored := await self._stored_from(name, stream, seq)):
            seq = stored.seq + 1
            envelope, exchange, key, deadline_ms, defect = decode(
                stored.headers, stored.data or b""
            )
            deliveries, stored_ns = self._history(stored)
            if not expired(deadline_ms, stored_ns, message_ttl):
                redelivered = deliveries > 0
                peeked.append(
                    Delivery(envelope, exchange, key, redelivered, deliveries, None, defect=defect)
                )

    async def _stored_from(self, name: str, stream: str, seq: int) -> Any | None:
        """The first message of one of the queue's streams at ``seq`` or after (None: none)."""
        try:
            return await self._js.get_msg(
                stream, seq, subject=self._names.subjects(name), next=True
            )
        except js_errors.NotFoundError:
            return None
        except ERRORS as exc:
            raise translate(exc, ConnectionFailed, f"reading queue {name!r}") from exc

    @staticmethod
    def _history(stored: Any) -> tuple[int, int]:
        """(deliveries so far, ns since the epoch its queue first stored it) of a message read
        from its stream, which JetStream has not delivered since it was stored."""
        at = stored.time.timestamp() if stored.time else time.time()
        return history(stored.headers, 0, int(at * 1e9))

    async def _reaped(self, name: str) -> bool:
        """Whether the exclusive queue ``name`` was another connection's that is gone (its
        records are then deleted): its owner, asked, does not answer."""
        try:
            await self._nc.request(
                self._names.subject(name), b"", timeout=self._heartbeat, headers={PROBE: "1"}
            )
            return False
        except nats_errors.NoRespondersError:
            pass
        except ERRORS:
            return False  # no answer, or the connection failed: not known to be gone
        await self._call(self._records.delete_queue(name), f"reaping queue {name!r}")
        return True

    def _reap_later(self, name: str) -> None:
        """Reap an exclusive queue a publish found nobody listening to (see ``_reaped``)."""
        if name in self._reaping:
            return
        self._reaping.add(name)

        async def reap() -> None:
            try:
                record = await self._records.queue(name)
                if record is not None and record["options"]["exclusive"]:
                    await self._reaped(name)
            finally:
                self._reaping.discard(name)

        self._chore(reap(), f"reaping queue {name!r}")

    def _chore(self, work: Awaitable[Any], what: str) -> None:
        """Run ``work`` in the background; a failure is logged (close waits for what runs)."""

        async def chore() -> None:
            try:
                await work
            except FAILURES as exc:
                log.debug("%s: %r", what, exc)

        task = asyncio.ensure_future(chore())
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _expire_head(self, name: str, stream: str, first: int) -> bool:
        """Dead-letter the expired messages at the head of the queue that no consumer has
        had (as RabbitMQ expires them: from the head); whether there were any."""
        message_ttl = (await self._options_of(name)).message_ttl
        dead_letter = self._dead_letter_of(name)
        any_expired = False
        while (stored := await self._stored_from(name, stream, first)) is not None:
            envelope, exchange, key, deadline_ms, _ = decode(stored.headers, stored.data or b"")
            if not expired(deadline_ms, self._history(stored)[1], message_ttl):
                break
            await dead_letter(envelope, exchange, key, EXPIRED)
            with contextlib.suppress(*ERRORS):  # a consumer may have taken it meanwhile
                await self._js.delete_msg(stream, stored.seq)
            any_expired = True
            first = stored.seq + 1
        return any_expired

    async def _options_of(self, name: str) -> QueueOptions:
        options = self._options.get(name)
        if options is None:
            record = await self._call(self._records.queue(name), f"reading queue {name!r}")
            if record is None:
                raise NotFound(f"queue {name!r} does not exist on {self._where}")
            options = self._options[name] = QueueOptions(**record["options"])
        return options

    def _dead_letter_of(self, name: str) -> Any:
        """What moves a message of queue ``name`` to its dead-letter queue, if it has one."""

        async def dead_letter(envelope: Envelope, exchange: str, key: str, reason: str) -> None:
            target = (await self._options_of(name)).dead_letter
            if target is None:
                return
            headers = dead_letter_headers(envelope.headers, queue=name, reason=reason)
            moved = replace(envelope, headers=headers, expiration=None)
            await self._publish_to(target, moved.priority, *encode(moved, exchange, key, None))

        return dead_letter

    # -- exchanges --------------------------------------------------------------------------

    async def declare_exchange(self, name: str, kind: ExchangeKind, durable: bool) -> None:
        what = f"declaring exchange {name!r}"
        await self._call(self._records.declare_exchange(name, kind.value, durable), what)
        self._topology.exchange_declared(name, kind, durable)

    async def check_exchange(self, name: str) -> None:
        await self._exchange(name)

    async def _exchange(self, name: str) -> Record:
        record = await self._call(self._records.exchange(name), f"reading exchange {name!r}")
        if record is None:
            raise NotFound(f"exchange {name!r} does not exist on {self._where}; declare it first")
        return record

    async def delete_exchange(self, name: str) -> None:
        await self._call(self._records.delete_exchange(name), f"deleting exchange {name!r}")
        self._topology.exchange_deleted(name)

    async def bind(self, queue: str, exchange: str, key: str) -> None:
        await self._bind(queue, exchange, key)
        self._topology.bound(queue, exchange, key)

    async def _bind(self, queue: str, exchange: str, key: str) -> None:
        what = f"binding {queue!r} to {exchange!r}"
        await self._call(self._records.bind(queue, exchange, key), what)

    @staticmethod
    def _route(record: Record, key: str) -> list[str]:
        """The queues an exchange's record sends a message with ``key`` to."""
        bindings: dict[str, list[str]] = record["bindings"]
        if record["kind"] == ExchangeKind.FANOUT.value:
            return list(bindings)
        if record["kind"] == ExchangeKind.DIRECT.value:
            return [queue for queue, keys in bindings.items() if key in keys]
        return [
            queue
            for queue, patterns in bindings.items()
            if any(topic_matches(pattern, key) for pattern in patterns)
        ]

    # -- publishing -------------------------------------------------------------------------

    def _encoded(self, envelope: Envelope, exchange: str, key: str) -> tuple[dict[str, str], bytes]:
        deadline_ms = None
        if envelope.expiration is not None:
            deadline_ms = round((time.time() + envelope.expiration) * 1000)
        headers, payload = encode(envelope, exchange, key, deadline_ms)
        limit = self._nc.max_payload
        if size(headers, payload) > limit:
            raise SerializationError(
                f"the message takes {size(headers, payload)} bytes with its headers, more than"
                f" the {limit} NATS at {self._where} carries (its max_payload)"
            )
        return headers, payload

    async def _targets(self, exchange: str, key: str) -> list[str]:
        if exchange == "":
            return [key]
        return self._route(await self._exchange(exchange), key)

    async def _publish_to(
        self, queue: str, priority: int | None, headers: dict[str, str], payload: bytes
    ) -> bool:
        """Publish to one queue and wait for its stream (or owner) to confirm; False when
        no queue of that name exists."""
        if self._closed:
            raise Closed(f"the NATS transport of {self._where} is closed")
        return await self._store(queue, self._names.subject(queue, priority or 0), headers, payload)

    async def _store(
        self, queue: str, subject: str, headers: dict[str, str], payload: bytes
    ) -> bool:
        """Publish on one of the queue's subjects and wait for its stream (or owner) to
        confirm; False when no queue of that name exists. Also while closing: a closing
        consumer returns what it holds this way."""
        bound = time.monotonic() + self.url.settings["operation_timeout"] * UNANSWERED_SHARE
        pause = 0.01
        while True:
            try:
                await self._js.publish(subject, payload, headers=headers)
            except js_errors.NoStreamResponseError:
                if not await self._stream_exists(queue):
                    return False
                # Its stream exists but nobody took the message: in a cluster, the stream's
                # leader is being elected or this server has not heard of it yet. Nothing was
                # stored, so sending again duplicates nothing.
                if time.monotonic() + pause > bound:
                    raise PublishFailed(
                        f"publishing to {queue!r}: no server of {self._where} took it for"
                        " the queue's stream (a leader being elected?); it was not stored"
                    ) from None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)
            except ERRORS as exc:
                raise translate(
                    exc, PublishFailed, f"publishing to {queue!r}: the outcome is unknown"
                ) from exc
            else:
                self._reached.add(queue)
                return True

    async def _stream_exists(self, queue: str) -> bool:
        """Whether the queue has streams: its level 0, which every stored queue has, exists
        (an unknown answer, as while a cluster elects its leader, counts as yes)."""
        return await self._stream_named(self._names.stream(queue))

    async def _stream_named(self, stream: str) -> bool:
        try:
            await self._js.stream_info(stream)
        except js_errors.NotFoundError:
            return False
        except ERRORS:
            return True
        return True

    # -- delays (_delays) -------------------------------------------------------------------

    async def _start_mover(self) -> None:
        async with self._mover_lock:  # one mover, though a consume and a delay both start one
            if self._mover is not None:
                return

            async def route(exchange: str, key: str, envelope: Envelope) -> None:
                await self.publish(exchange, key, envelope)

            mover = DelayMover(
                self._js, self._delay_stream, self._delay_subject, route, self._heartbeat
            )
            await self._call(self._once_known(mover.start), "taking delayed messages")
            self._mover = mover

    async def _declare_delays(self) -> None:
        config = delay_stream_config(self._delay_stream, self._delay_subject, self._replicas)
        await self._call(self._js.add_stream(config), "declaring the delay stream")

    async def _publish_delayed(self, exchange: str, key: str, envelope: Envelope) -> None:
        """To the namespace's delay stream, due ``envelope.delay`` seconds from now; declared
        again if it is gone (deleted elsewhere), never a silent loss."""
        assert envelope.delay is not None
        if exchange:
            await self._exchange(exchange)  # NotFound now, as for any publish
        due_ms = math.ceil((time.time() + envelope.delay) * 1000)  # never early
        headers, payload = self._encoded(replace(envelope, delay=None), exchange, key)
        headers[DUE_HEADER] = str(due_ms)
        for attempt in (1, 2):
            if self._mover is None:
                await self._declare_delays()
                await self._start_mover()
            try:
                await self._js.publish(self._delay_subject, payload, headers=headers)
                return
            except js_errors.NoStreamResponseError:
                if attempt == 2:
                    raise PublishFailed(
                        f"the delay stream {self._delay_stream!r} took no message though just"
                        " declared"
                    ) from None
                if self._mover is not None:
                    await self._mover.stop()
                    self._mover = None
            except ERRORS as exc:
                raise translate(
                    exc, PublishFailed, "publishing a delayed message: the outcome is unknown"
                ) from exc

    async def publish(
        self, exchange: str, key: str, envelope: Envelope, *, mandatory: bool = False
    ) -> None:
        if envelope.delay is not None:
            await self._publish_delayed(exchange, key, envelope)
            return
        headers, payload = self._encoded(envelope, exchange, key)
        targets = await self._targets(exchange, key)
        priority = envelope.priority
        if len(targets) == 1:
            reached = [await self._publish_to(targets[0], priority, headers, payload)]
        else:
            sent = [self._publish_to(queue, priority, headers, payload) for queue in targets]
            reached = list(await asyncio.gather(*sent))
        routed = any(reached)
        if exchange != "":
            for queue, ok in zip(targets, reached, strict=True):
                if not ok:
                    self._reap_later(queue)
        if mandatory and not routed:
            raise Unroutable(
                f"no queue is bound to exchange {exchange!r} for key {key!r}; "
                "the message was not delivered"
            )

    async def publish_unconfirmed(self, exchange: str, key: str, envelope: Envelope) -> None:
        headers, payload = self._encoded(envelope, exchange, key)
        for queue in await self._targets(exchange, key):
            if queue not in self._reached and queue not in self._transients:
                # the first to a queue confirmed: in a cluster, the server this connection
                # is on may not yet know of a stream just declared through another, and
                # would drop the message
                await self._publish_to(queue, envelope.priority, headers, payload)
                continue
            subject = self._names.subject(queue, envelope.priority or 0)
            await self._call(self._nc.publish(subject, payload, headers=headers), "publishing")

    async def publish_many(
        self, exchange: str, items: Sequence[tuple[str, Envelope]], *, mandatory: bool = False
    ) -> None:
        record = None if exchange == "" else await self._exchange(exchange)
        pending = []
        for key, envelope in items:
            headers, payload = self._encoded(envelope, exchange, key)
            targets = [key] if record is None else self._route(record, key)
            if mandatory and not targets:
                raise Unroutable(f"no queue is bound to exchange {exchange!r} for key {key!r}")
            for queue in targets:
                subject = self._names.subject(queue, envelope.priority or 0)
                future = await self._call(
                    self._js.publish_async(subject, payload, headers=headers), "publishing"
                )
                pending.append((key, future, (queue, envelope.priority, headers, payload)))
        waiting = asyncio.gather(*(f for _, f, _ in pending), return_exceptions=True)
        try:  # the acks of publish_async have no time limit of their own
            outcomes = await asyncio.wait_for(waiting, self.url.settings["operation_timeout"])
        except asyncio.TimeoutError:
            raise PublishFailed(
                f"publishing to {exchange or 'queues'!r}: NATS at {self._where} did not"
                " acknowledge in time; the outcome is unknown"
            ) from None
        for (key, _, message), outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, js_errors.NoStreamResponseError) or (
                isinstance(outcome, BaseException) and "no responders" in str(outcome).lower()
            ):
                # one at a time, waiting out a cluster's election where the stream exists
                if not await self._publish_to(*message) and mandatory:
                    raise Unroutable(f"no queue {key!r} takes messages from {exchange!r}")
            elif isinstance(outcome, BaseException):
                raise translate(outcome, PublishFailed, "publishing: the outcome is unknown")

    # -- consuming --------------------------------------------------------------------------

    async def consume(
        self, queue: str, deliver: DeliverCallback, *, prefetch: int, auto_ack: bool = False
    ) -> str:
        tag = f"ctag-{next(self._tags)}"
        transient = self._transients.get(queue)
        if transient is not None:
            transient.attach(tag, deliver, prefetch, auto_ack)
            self._consuming_transient[tag] = transient
            return tag
        options = await self._options_of(queue)
        streams = await self._streams(queue)
        info = await self._call(
            self._js.consumer_info(streams[0], CONSUMER), f"consuming {queue!r}"
        )
        consumer = PullConsumer(
            self._nc,
            tag,
            queue,
            [f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{CONSUMER}" for stream in streams],
            self._names.subjects(queue) if len(streams) > 1 else None,
            deliver,
            prefetch,
            auto_ack,
            options.message_ttl,
            self._dead_letter_of(queue),
            functools.partial(self._store, queue),
        )
        # renewed within the ack wait the durable consumer has, which the connection that
        # created it chose (its heartbeat= may differ from ours)
        consumer.ack_wait = float(info.config.ack_wait or self._heartbeat)
        await self._call(consumer.start(), f"consuming {queue!r}")
        self._pulls[tag] = consumer
        self._topology.consuming(tag, consumer)
        if self._mover is None:  # a consumer moves delayed messages, whoever delayed them
            self._start_mover_soon()
        return tag

    def _start_mover_soon(self) -> None:
        """Start moving delayed messages, in the background: the connect or consume that asks
        must not fail for it (a cluster electing a leader, say); a later consume or delayed
        publish tries again."""

        async def start() -> None:
            try:
                await self._declare_delays()
                await self._start_mover()
            except PolybusError as exc:
                log.warning("not moving delayed messages on %s for now: %s", self._where, exc)

        if self._mover_starting is None or self._mover_starting.done():
            self._mover_starting = asyncio.ensure_future(start())

    async def cancel(self, consumer_tag: str) -> None:
        self._topology.cancelled(consumer_tag)
        transient = self._consuming_transient.pop(consumer_tag, None)
        if transient is not None:
            transient.detach()
            if self._options[transient.name].auto_delete:
                await self._delete_transient(transient.name)
            return
        consumer = self._pulls.get(consumer_tag)
        if consumer is not None:
            await self._stop(consumer)
            if not consumer.held:
                self._pulls.pop(consumer_tag, None)

    async def ack(self, delivery: Delivery) -> None:
        holder, handle = delivery.tag
        try:
            await holder.ack(handle)
        except ERRORS as exc:
            raise translate(exc, ConnectionFailed, "acking") from exc

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        holder, handle = delivery.tag
        try:
            await holder.nack(handle, delivery, requeue)
        except ERRORS as exc:
            raise translate(exc, ConnectionFailed, "returning a message") from exc
