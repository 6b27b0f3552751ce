"""RPC: requests on a shared queue, replies on the caller's own reply queue.

A client (one per bus) owns one transient reply queue and one consumer for it, however many calls
are in flight; each call waits on its own future keyed by a unique correlation id, so a reply is
never handed to the wrong caller and nobody polls. Servers ack a request only after its reply is
published (handed to the connection, ahead of the ack), so a server that dies mid-call leaves the
request for another.

Requests and replies are published unconfirmed: their loss already has a visible outcome (the
caller's ``RpcTimeout``), and waiting for a confirmation would put a round trip on every call —
the server's ack, and with it the broker's next delivery under prefetch 1, would wait for it.
"""

from __future__ import annotations

import asyncio
import os
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from polybus.core.arguments import check_int, check_prefetch, check_seconds
from polybus.core.codecs import JsonCodec, decode_body
from polybus.core.deadletters import Outcome
from polybus.core.decorators import Handler
from polybus.core.errors import RemoteError, RpcTimeout
from polybus.core.exchange import TRANSIENT
from polybus.core.limits import MAX_TTL, MIN_TTL
from polybus.core.subscription import ConsumeSpec, QueueConsumer
from polybus.core.transport import Delivery, Envelope, QueueOptions
from polybus.core.worker import HandlerRunner, HandlerUnavailable, Worker

if TYPE_CHECKING:
    from polybus.core.bus import AsyncBus, SendOptions

ERROR_HEADER = "x-polybus-error"
RPC_QUEUE = QueueOptions(durable=False)
_REPLY: SendOptions = {"persistent": False}
_error_codec = JsonCodec()


class RpcClient:
    """The bus's reply queue and the futures of its calls in flight."""

    def __init__(self, bus: AsyncBus) -> None:
        self.bus = bus
        self._pending: dict[str, asyncio.Future[Delivery]] = {}
        self._consumer: QueueConsumer | None = None
        self._starting = asyncio.Lock()

    async def reply_queue(self) -> str:
        if self._consumer is None:
            async with self._starting:
                if self._consumer is None:
                    spec = ConsumeSpec(
                        self.bus._transient_name("reply"),
                        TRANSIENT,
                        prefetch=1000,
                        auto_ack=True,
                        transient=True,
                    )
                    consumer = QueueConsumer(self.bus, spec, self._on_reply)
                    await consumer.start()
                    self._consumer = consumer
        return self._consumer.queue

    def _on_reply(self, delivery: Delivery) -> None:
        future = self._pending.pop(delivery.envelope.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(delivery)
        # else: a late reply to a call that timed out, or not ours: dropped

    async def call(self, queue: str, envelope: Envelope, timeout: float) -> Any:
        reply_to = await self.reply_queue()
        correlation_id = os.urandom(12).hex()
        envelope.correlation_id = correlation_id
        envelope.reply_to = reply_to
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivery] = loop.create_future()
        self._pending[correlation_id] = future
        # a timer rather than asyncio.wait_for, which costs the reply two more loop turns
        timer = loop.call_later(timeout, _time_out, future, queue, timeout)
        try:
            # unconfirmed: a request that is lost shows as RpcTimeout, and a confirm would
            # cost the caller another frame to read and another wake-up
            await self.bus._broker.publish_unconfirmed("", queue, envelope)
            delivery = await future
        finally:
            timer.cancel()
            self._pending.pop(correlation_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # read: a timeout that fired while the publish failed
        reply = delivery.envelope
        if reply.headers.get(ERROR_HEADER):
            error = _error_codec.decode(reply.body)
            raise RemoteError(error["type"], error["message"], error["traceback"])
        return decode_body(reply.body, reply.content_type)

    async def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        if self._consumer is not None:
            await self._consumer.close([])


class Rpc:
    """``await rpc.call(30, timeout=5)`` on clients; ``await rpc.serve(fib)`` (or the
    ``@rpc.handler`` decorator) on servers."""

    def __init__(self, bus: AsyncBus, name: str, *, declare: bool | None = None) -> None:
        self._bus = bus
        self._name = bus._qualify(name)
        self._adopted = not bus._declaring(declare)

    @property
    def name(self) -> str:
        """The request queue's name on the broker (namespace included)."""
        return self._name

    async def declare(self) -> None:
        """Declare the request queue — or, with ``declare=False``, check that it exists."""
        if self._adopted:
            await self._bus._adopt_queue(self._name)
        else:
            await self._bus._declare_queue(self._name, RPC_QUEUE)

    async def delete(self) -> None:
        """Delete the request queue (stop its servers first: their consumers go with it)."""
        await self._bus._broker.delete_queue(self._name)
        self._bus._forget_queue(self._name)

    async def call(
        self, body: Any, *, timeout: float = 30.0, headers: dict[str, Any] | None = None
    ) -> Any:
        """Send a request and return the reply's body.

        :raises RpcTimeout: no reply within ``timeout`` seconds (a late reply is dropped).
        :raises RemoteError: the handler raised.
        """
        timeout = check_seconds(timeout, "timeout", low=MIN_TTL, high=MAX_TTL)
        expiry = timeout if self._bus.capabilities.ttl else None
        options: SendOptions = {"headers": headers, "ttl": expiry, "persistent": False}
        envelope = self._bus._envelope(body, options, "call")
        await self.declare()
        return await self._bus._rpc_client().call(self._name, envelope, timeout)

    async def cast(self, body: Any, *, headers: dict[str, Any] | None = None) -> None:
        """Send a request that expects no reply."""
        envelope = self._bus._envelope(body, {"headers": headers, "persistent": False}, "cast")
        await self.declare()
        await self._bus._broker.publish("", self._name, envelope)

    async def serve(
        self, handler: Callable[..., Any], *, concurrency: int = 1, prefetch: int | None = None
    ) -> Worker:
        """Answer requests with ``handler(body)`` — a coroutine on the loop, a plain function
        on the worker's own threads; its return value is the reply body."""
        concurrency = check_int(concurrency, "concurrency", 1)
        prefetch = check_prefetch(concurrency if prefetch is None else prefetch)
        runner = HandlerRunner(handler, concurrency, self._name)
        bus = self._bus
        broker = bus._broker

        async def process(delivery: Delivery) -> Outcome:
            request = delivery.envelope
            try:
                result = await runner.call(decode_body(request.body, request.content_type))
                reply = bus._envelope(result, _REPLY) if request.reply_to else None
            except HandlerUnavailable:
                raise
            except Exception as exc:
                reply = _error_reply(exc) if request.reply_to else None
            if reply is not None and request.reply_to:
                reply.correlation_id = request.correlation_id
                # handed to the connection before the ack: a server that dies before that
                # leaves the request to another; a reply lost after is the caller's RpcTimeout
                await broker.publish_unconfirmed("", request.reply_to, reply)
            await broker.ack(delivery)
            return "acked"

        await self.declare()
        spec = ConsumeSpec(self._name, RPC_QUEUE, prefetch=prefetch, adopt_queue=self._adopted)
        worker = Worker(bus, spec, process, concurrency=concurrency, runner=runner)
        return await worker._start()

    def handler(self, function: Handler) -> Handler:
        """``@rpc.handler``: serve with the function and return it unchanged (the server
        starts as a task of the bus: ``await bus.run()`` waits for it)."""
        self._bus._start_soon(self.serve(function), f"a server on {self._name!r}")
        return function


def _time_out(future: asyncio.Future[Delivery], queue: str, timeout: float) -> None:
    if not future.done():
        future.set_exception(
            RpcTimeout(f"no reply from {queue!r} within {timeout}s; is a server running on it?")
        )


def _error_reply(exc: BaseException) -> Envelope:
    error = {
        "type": type(exc).__qualname__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
    return Envelope(
        _error_codec.encode(error), _error_codec.content_type, {ERROR_HEADER: 1}, persistent=False
    )
