"""The asyncio bus: one transport, the codec, declarations, and the four patterns.

Everything the patterns share lives here, private to polybus: name qualification (the URL's
``namespace``), a cache of declarations so a pattern declares once per bus, envelope building
(checked options, ids, timestamp, codec), the ``Broker`` through which every transport call is
bounded, and the set of open subscriptions and workers that ``close()`` shuts down. Its public
surface is what users call: the four patterns, ``run``, ``close``, ``url``, ``capabilities``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from polybus.core.arguments import (
    check_bool,
    check_delay,
    check_known,
    check_priority,
    check_property,
    check_ttl,
)
from polybus.core.broker import Broker
from polybus.core.codecs import Codec, encode_body, get_codec
from polybus.core.conflicts import exchange_conflict, queue_conflict
from polybus.core.errors import CapabilityMissing, Closed, InvalidArgument, NotFound
from polybus.core.headers import checked_headers
from polybus.core.message import AsyncMessage, BaseMessage
from polybus.core.names import check_name
from polybus.core.transport import Capabilities, Envelope, ExchangeKind, QueueOptions, Transport
from polybus.core.url import create_transport, redact, resolve_url

if TYPE_CHECKING:
    from polybus.core.pubsub import PubSub
    from polybus.core.router import Router
    from polybus.core.rpc import Rpc, RpcClient
    from polybus.core.transport import Delivery
    from polybus.core.workqueue import WorkQueue

log = logging.getLogger("polybus")


class SendOptions(TypedDict, total=False):
    """Message properties every send and publish accepts (``ttl`` and ``delay`` in seconds:
    a delayed message is delivered no earlier than ``delay`` after it was sent)."""

    headers: dict[str, Any] | None
    priority: int | None
    ttl: float | None
    delay: float | None
    message_id: str | None
    correlation_id: str | None
    reply_to: str | None
    persistent: bool


SEND_OPTIONS = frozenset(SendOptions.__annotations__)


class AsyncBus:
    """``async with polybus.aio.connect(url) as bus:`` — the asyncio entry point."""

    def __init__(
        self,
        url: str | None = None,
        *,
        transport: Transport | None = None,
        codec: str | Codec = "json",
    ) -> None:
        self._transport = transport if transport is not None else create_transport(resolve_url(url))
        settings = self._transport.url.settings
        self._codec = get_codec(codec) if isinstance(codec, str) else codec
        self._namespace: str = settings["namespace"]
        self._declares: bool = settings["declare"]
        self._broker = Broker(self._transport, settings["operation_timeout"])
        self._handler_message: type[BaseMessage] = AsyncMessage
        """What a worker's handler gets (the blocking API's bus gives its ``Message``)."""
        self._queues: dict[str, QueueOptions] = {}
        self._adopted: set[str] = set()
        self._exchanges: dict[str, tuple[ExchangeKind, bool]] = {}
        self._open: dict[int, Callable[[], Awaitable[None]]] = {}
        self._starting: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(6).hex()
        self._rpc: RpcClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._closed = False

    @property
    def url(self) -> str:
        """The broker URL, its password hidden."""
        return redact(self._transport.url.raw)

    @property
    def capabilities(self) -> Capabilities:
        """What the transport can do (priorities, TTL, dead letters, …)."""
        return self._transport.capabilities

    @property
    def closed(self) -> bool:
        return self._closed

    async def _connect(self) -> AsyncBus:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        await self._broker.connect()
        return self

    # -- the patterns -----------------------------------------------------------------------

    def work_queue(
        self,
        name: str,
        *,
        durable: bool = True,
        dead_letter: str | Literal[True] | None = True,
        max_priority: int | None = None,
        message_ttl: float | None = None,
        declare: bool | None = None,
    ) -> WorkQueue:
        """A queue shared by workers. ``dead_letter=True`` means ``<name>.dead``; ``None``, none.
        ``declare=False``: use the queue as it exists (the options are then not checked)."""
        from polybus.core.workqueue import WorkQueue

        return WorkQueue(
            self,
            name,
            durable=durable,
            dead_letter=dead_letter,
            max_priority=max_priority,
            message_ttl=message_ttl,
            declare=declare,
        )

    def pubsub(self, name: str, *, durable: bool = True, declare: bool | None = None) -> PubSub:
        """A fanout exchange: every subscriber gets every message. ``durable``: the exchange
        survives a broker restart; ``declare=False``: use it as it exists."""
        from polybus.core.pubsub import PubSub

        return PubSub(self, name, durable=durable, declare=declare)

    def router(
        self,
        name: str,
        kind: Literal["direct", "topic"] = "direct",
        *,
        durable: bool = True,
        declare: bool | None = None,
    ) -> Router:
        """A direct or topic exchange: subscribers choose messages by routing key."""
        from polybus.core.router import Router

        return Router(self, name, kind, durable=durable, declare=declare)

    def rpc(self, name: str, *, declare: bool | None = None) -> Rpc:
        """Request/reply over the queue ``name`` (``declare=False``: use it as it exists)."""
        from polybus.core.rpc import Rpc

        return Rpc(self, name, declare=declare)

    async def queue_names(self) -> list[str]:
        """The broker's queues, sorted, by the names this bus gives them: with a namespace,
        only the queues in it, without it in front.

        :raises CapabilityMissing: the broker cannot list its queues (AMQP cannot).
        """
        names = await self._broker.queue_names()
        if not self._namespace:
            return names
        prefix = f"{self._namespace}."
        return [name[len(prefix) :] for name in names if name.startswith(prefix)]

    # -- what the patterns share ------------------------------------------------------------

    def _qualify(self, name: str, what: str = "queue") -> str:
        """The broker-side name: validated, with the URL's namespace in front."""
        check_name(name, what)
        return f"{self._namespace}.{name}" if self._namespace else name

    def _transient_name(self, purpose: str) -> str:
        """A unique name for a queue that lives as long as its consumer."""
        return self._qualify(f"polybus.{purpose}.{os.urandom(8).hex()}")

    def _declaring(self, declare: bool | None) -> bool:
        """A pattern's ``declare=``: its own, else the URL's."""
        return self._declares if declare is None else check_bool(declare, "declare")

    async def _declare_queue(self, name: str, options: QueueOptions) -> None:
        known = self._queues.get(name)
        if known is options or known == options:
            return
        if known is not None:
            raise queue_conflict(name, asdict(known), asdict(options), "this bus")
        self._require("dead_letter", options.dead_letter is not None, f"queue {name!r}")
        self._require("ttl", options.message_ttl is not None, f"queue {name!r}")
        self._require("priority", options.max_priority is not None, f"queue {name!r}")
        if options.dead_letter is not None:  # dead letters are kept, whatever their queue
            await self._declare_queue(options.dead_letter, QueueOptions(durable=True))
        await self._broker.declare_queue(name, options)
        self._queues[name] = options

    async def _declare_exchange(self, name: str, kind: ExchangeKind, durable: bool = True) -> None:
        known = self._exchanges.get(name)
        if known == (kind, durable):
            return
        if known is not None:
            raise exchange_conflict(
                name,
                {"kind": known[0].value, "durable": known[1]},
                {"kind": kind.value, "durable": durable},
                "this bus",
            )
        await self._broker.declare_exchange(name, kind, durable)
        self._exchanges[name] = (kind, durable)

    async def _adopt_queue(self, name: str) -> None:
        """Use a queue as it exists, declaring nothing; check that it does exist."""
        if name not in self._adopted:
            try:
                await self._broker.queue_size(name)
            except NotFound as exc:
                raise NotFound(
                    f"queue {name!r} does not exist; with declare=False polybus uses queues as"
                    " they exist: create it first, or let polybus declare it (declare=True)"
                ) from exc
            self._adopted.add(name)

    async def _adopt_exchange(self, name: str) -> None:
        """Use an exchange as it exists, declaring nothing; check that it does exist."""
        if name not in self._adopted:
            try:
                await self._broker.check_exchange(name)
            except NotFound as exc:
                raise NotFound(
                    f"exchange {name!r} does not exist; with declare=False polybus uses"
                    " exchanges as they exist: create it first, or let polybus declare it"
                    " (declare=True)"
                ) from exc
            self._adopted.add(name)

    def _forget_queue(self, name: str) -> None:
        self._queues.pop(name, None)
        self._adopted.discard(name)

    def _forget_exchange(self, name: str) -> None:
        self._exchanges.pop(name, None)
        self._adopted.discard(name)

    def _require(self, capability: str, wanted: bool, what: str) -> None:
        """Refuse an option the transport would silently ignore."""
        capabilities = self._transport.capabilities
        if wanted and not getattr(capabilities, capability):
            raise CapabilityMissing(
                f"{what} asks for {capability}, which {self._transport.url.scheme}:// cannot do"
                f" ({capabilities.reason or 'not supported'}); drop the option or switch brokers"
            )

    def _envelope(self, body: Any, options: SendOptions, call: str = "send") -> Envelope:
        """Check the options and encode the body — raising ``InvalidArgument`` or
        ``SerializationError`` before anything is sent — and add the ids."""
        return self._envelopes(options, call)(body)

    def _envelopes(self, options: SendOptions, call: str = "send") -> Callable[[Any], Envelope]:
        """Check the options once and return what makes an envelope of each body with them
        (``send_many``: the options are the same for every body of the batch)."""
        if self._closed:
            raise Closed(f"the bus to {self.url} is closed")
        if options.keys() - SEND_OPTIONS:
            check_known(options, SEND_OPTIONS, call)
        ttl = check_ttl(options.get("ttl"))
        self._require("ttl", ttl is not None, "a message")
        delay = check_delay(options.get("delay"))
        if delay is not None and ttl is not None:
            raise InvalidArgument(
                f"{call} was given both ttl and delay; a delayed message cannot expire yet:"
                " drop one of them"
            )
        headers = options.get("headers")
        checked = checked_headers(headers) if headers is not None else None
        message_id = check_property(options.get("message_id"), "message_id")
        correlation_id = check_property(options.get("correlation_id"), "correlation_id")
        reply_to = check_property(options.get("reply_to"), "reply_to")
        priority = check_priority(options.get("priority"))
        persistent = check_bool(options.get("persistent", True), "persistent")
        self._require("delay", delay is not None, "a message")
        codec, ids, id_prefix = self._codec, self._ids, self._id_prefix

        def envelope(body: Any) -> Envelope:
            data, content_type = encode_body(body, codec)
            return Envelope(
                data,
                content_type,
                dict(checked) if checked else {},  # each message its own dict
                message_id or f"{id_prefix}-{next(ids)}",
                correlation_id,
                reply_to,
                time.time(),
                priority,
                ttl,
                persistent,
                delay,
            )

        return envelope

    def _message(self, delivery: Delivery) -> BaseMessage:
        """The message a worker's handler gets (the worker settles it, not the handler)."""
        return self._handler_message(delivery, None)

    def _rpc_client(self) -> RpcClient:
        """The bus's one reply queue and its pending calls, shared by every ``Rpc``."""
        from polybus.core.rpc import RpcClient

        if self._rpc is None:
            self._rpc = RpcClient(self)
        return self._rpc

    def _track(self, owner: object, close: Callable[[], Awaitable[None]]) -> None:
        """Remember an open subscription or worker, for ``close()`` to shut down."""
        if self._closed:
            raise Closed("the bus is closed")
        self._open[id(owner)] = close

    def _untrack(self, owner: object) -> None:
        self._open.pop(id(owner), None)

    def _start_soon(self, starting: Awaitable[Any], what: str) -> None:
        """Start a worker a decorator asked for (a decorator cannot await): ``run()`` waits for
        it, and raises what it raised; a failure nobody waits for is logged."""

        def report(task: asyncio.Task[Any]) -> None:
            self._starting.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("could not start %s: %s", what, task.exception())

        task = asyncio.ensure_future(starting)
        self._starting.add(task)
        task.add_done_callback(report)

    # -- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop workers (running handlers finish), close subscriptions (unreceived messages go
        back), then disconnect. Leaves no task behind."""
        if self._closed:
            return
        self._closed = True
        self._broker.closing = True  # what fails from now on fails because the bus closes
        if self._stopped is not None:
            self._stopped.set()
        if self._starting:
            await asyncio.gather(*self._starting, return_exceptions=True)
        for close in list(self._open.values())[::-1]:
            await close()
        if self._rpc is not None:
            await self._rpc.close()
        await self._broker.close()

    async def run(self) -> None:
        """Serve until SIGINT/SIGTERM (or ``close()``), then shut down gracefully. Workers that
        decorators started are running first (what failed to start raises here)."""
        stopped = self._stopped
        if stopped is None:
            raise Closed("the bus is not connected; use 'async with polybus.aio.connect()'")
        if self._starting:
            await asyncio.gather(*self._starting)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        try:
            await stopped.wait()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            await self.close()

    async def __aenter__(self) -> AsyncBus:
        return await self._connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
