"""Publishing: coalesced per event-loop turn, pipelined, through Lua only where routing needs it.

A message for an exchange is routed by the ``PUBLISH`` script, which reads the bindings and
appends to every matching queue atomically. A message sent straight to a queue this transport
declared (the default exchange, no TTL to compute) needs no routing: it is one ``XADD
NOMKSTREAM``, without a Lua round trip that would copy its body in and out of the script.
``NOMKSTREAM`` keeps that honest: if the queue was deleted meanwhile, the XADD writes nothing and
the message goes through ``PUBLISH`` after all, which drops it, or raises ``Unroutable``.

Everything published during one loop turn is one round: its commands are written as soon as each
batch is packed, and the next round starts when every reply of this one is in, so messages from
one publisher reach a queue in the order they were published.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import exceptions as redis_errors

from polybus.core.errors import PolybusError, PublishFailed
from polybus.core.tasks import finished
from polybus.core.transport import Envelope
from polybus.transports.redis._codec import PublishFields, publish_fields
from polybus.transports.redis._errors import ERRORS, translate
from polybus.transports.redis._session import Session
from polybus.transports.redis._wire import ServedElsewhere, bulk_strings

BATCH = 200  # messages per script call, and per write of XADDs


@dataclass(eq=False)
class Outgoing:
    """Messages for one exchange and key that share one outcome."""

    exchange: str
    key: str
    mandatory: bool
    messages: list[PublishFields]
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    delay_ms: int | None = None
    """Kept by the ``DELAY`` script until due, instead of routed now."""

    def settle(self, error: PolybusError | None) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)

    def follows(self, other: Outgoing) -> bool:
        """Whether this can join ``other``'s script call: same route, room left."""
        return (self.exchange, self.key, self.mandatory, self.delay_ms) == (
            other.exchange,
            other.key,
            other.mandatory,
            other.delay_ms,
        ) and len(self.messages) + len(other.messages) <= BATCH


def merge(round_: list[Outgoing]) -> list[Outgoing]:
    """Consecutive publishes to the same exchange and key as one batch: they route the same
    way, so they share one outcome."""
    merged: list[Outgoing] = []
    for batch in round_:
        if merged and batch.follows(merged[-1]):
            merged[-1].messages.extend(batch.messages)
            merged[-1].waiters.extend(batch.waiters)
        else:
            merged.append(
                Outgoing(
                    batch.exchange,
                    batch.key,
                    batch.mandatory,
                    list(batch.messages),
                    list(batch.waiters),
                    batch.delay_ms,
                )
            )
    return merged


def _error_of(result: Any, where: str) -> PolybusError | None:
    """What a script call's reply means for its messages: None when it succeeded."""
    if isinstance(result, BaseException):
        return translate(result, PublishFailed, where)
    return None


def _xadds(key: str, streams: list[str], messages: list[PublishFields]) -> list[bytes]:
    """``XADD <stream> NOMKSTREAM * b <body> m <properties> x "" k <key> [pr <priority>]`` per
    message, the fields as the ``PUBLISH`` script writes them, packed from a template: packing
    each argument anew is what sending spent most on (docs/redis.md, Performance)."""
    tail = bulk_strings("x", "", "k", key)
    heads: dict[tuple[str, str], bytes] = {}
    packed = []
    for stream, (body, properties, _, priority) in zip(streams, messages, strict=True):
        head = heads.get((stream, priority))
        if head is None:
            fields = 14 if priority else 12
            head = b"*%d\r\n%s" % (fields, bulk_strings("XADD", stream, "NOMKSTREAM", "*", "b"))
            heads[stream, priority] = head
        packed.append(
            b"%s$%d\r\n%s\r\n$1\r\nm\r\n$%d\r\n%s\r\n%s%s"
            % (
                head,
                len(body),
                body,
                len(properties),
                properties,
                tail,
                bulk_strings("pr", priority) if priority else b"",
            )
        )
    return packed


class Publisher:
    """The transport's outbox and the task that sends it, one round at a time."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.link = session.new_link()
        self._outbox: list[Outgoing] = []
        self._task: asyncio.Task[None] | None = None

    async def publish(
        self,
        exchange: str,
        runs: Sequence[tuple[str, Sequence[Envelope]]],
        mandatory: bool,
        delay: float | None = None,
    ) -> None:
        """Queue runs of messages (key, envelopes) in batches; wait until Redis has them all
        (with a ``delay``: until it keeps them for later)."""
        loop = asyncio.get_running_loop()
        waiters: list[asyncio.Future[None]] = []
        delay_ms = None if delay is None else math.ceil(delay * 1000)
        for key, envelopes in runs:
            for start in range(0, len(envelopes), BATCH):
                done = loop.create_future()
                messages = [publish_fields(e) for e in envelopes[start : start + BATCH]]
                outgoing = Outgoing(exchange, key, mandatory, messages, [done], delay_ms)
                self._outbox.append(outgoing)
                waiters.append(done)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        if len(waiters) == 1:
            await waiters[0]
        else:  # gather: every batch's failure is read, not only the first
            await asyncio.gather(*waiters)

    async def drain(self) -> None:
        """Wait for the publishes in flight (on a clean close)."""
        await finished(self._task)

    def abort(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while self._outbox:
            round_, self._outbox = self._outbox, []
            try:
                await self._round(merge(round_))
            except asyncio.CancelledError:
                error = PublishFailed("the transport was aborted")
                for batch in round_ + self._outbox:
                    batch.settle(error)
                raise
            except Exception as exc:  # a bug must fail this round's sends, not hang them
                error = PublishFailed(
                    f"publishing to {self.session.where} failed unexpectedly"
                    f" ({exc!r}); the outcome is unknown"
                )
                error.__cause__ = exc
                for batch in round_:
                    batch.settle(error)

    async def _round(self, batches: list[Outgoing]) -> None:
        where = f"Redis at {self.session.where} (publish)"
        wait = self.session.replicas.command()
        sent: list[tuple[Outgoing, bool, asyncio.Future[list[Any]]]] = []
        for batch in batches:
            streams = self._direct_streams(batch)
            if streams is None:
                commands = [self._script_call(batch)]
            else:
                commands = _xadds(batch.key, streams, batch.messages)
            if wait is not None:
                commands.append(wait)
            try:
                replies = await self.link.send(commands, timeout=self._wait_time)
                sent.append((batch, streams is not None, replies))
            except ERRORS as exc:
                batch.settle(translate(exc, PublishFailed, where))
        again: list[Outgoing] = []
        reload = False
        for batch, direct, replies in sent:
            try:
                results = await replies
            except ServedElsewhere:  # refused there: publish where the queues are now
                again.append(batch)
                reload = True
                continue
            except ERRORS as exc:
                batch.settle(translate(exc, PublishFailed, f"{where}: the outcome is unknown"))
                continue
            if wait is not None and (short := self._unreplicated(results.pop())) is not None:
                batch.settle(short)
                continue
            follow_up = self._outcome(batch, direct, results, where)
            if follow_up is not None:
                again.append(follow_up)
                reload = reload or not direct
        if again:
            await self._through_script(again, where, reload)

    def _outcome(
        self, batch: Outgoing, direct: bool, results: list[Any], where: str
    ) -> Outgoing | None:
        """Settle the batch from its replies, or return what must go through the script."""
        if not direct:
            result = results[0]
            if isinstance(result, redis_errors.NoScriptError):
                return batch
            batch.settle(_error_of(result, where))
            return None
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            batch.settle(translate(errors[0], PublishFailed, where))
            return None
        lost = [m for m, r in zip(batch.messages, results, strict=True) if r is None]
        if not lost:
            batch.settle(None)
            return None
        # the queue is gone (or was declared anew): let the script decide where they go
        return Outgoing(batch.exchange, batch.key, batch.mandatory, lost, batch.waiters)

    async def _through_script(self, batches: list[Outgoing], where: str, reload: bool) -> None:
        """Publish with the script, loading the scripts first if Redis lost them (a restart)."""
        wait = self.session.replicas.command()
        calls = [self._script_call(b) for b in batches] + ([wait] if wait is not None else [])
        try:
            if reload:
                await self.link.call(*self.session.scripts.load_commands())
            results = await self.link.call(*calls, timeout=self._wait_time)
        except ERRORS as exc:
            error = translate(exc, PublishFailed, f"{where}: the outcome is unknown")
            for batch in batches:
                batch.settle(error)
            return
        short = None if wait is None else self._unreplicated(results.pop())
        for batch, result in zip(batches, results, strict=True):
            batch.settle(_error_of(result, where) or short)

    @property
    def _wait_time(self) -> float:
        """What a ``WAIT`` adds to the link's own bound on a reply."""
        replicas = self.session.replicas
        return replicas.timeout if replicas.count else 0.0

    def _unreplicated(self, acknowledged: Any) -> PublishFailed | None:
        """The failure of a batch that fewer replicas than asked acknowledged (``WAIT``'s
        reply), or None."""
        wanted = self.session.replicas
        if isinstance(acknowledged, int) and acknowledged >= wanted.count:
            return None
        return PublishFailed(
            f"Redis at {self.session.where} stored the message, but {acknowledged!r} of the"
            f" {wanted.count} replicas asked for (wait_replicas) had it within"
            f" {wanted.timeout:g}s: a failover now could lose it; the outcome is unknown"
        )

    def _direct_streams(self, batch: Outgoing) -> list[str] | None:
        """The stream of each message when the batch can skip the script, else None."""
        if batch.exchange or batch.delay_ms is not None:
            return None
        options = self.session.declared(batch.key)
        if options is None or options.message_ttl is not None:
            return None
        top = options.max_priority or 0
        streams = []
        for _, _, ttl, priority in batch.messages:
            if ttl:
                return None
            level = max(0, min(int(priority), top)) if top and priority else 0
            streams.append(self.session.stream_key(batch.key, level))
        return streams

    def _script_call(self, batch: Outgoing) -> bytes:
        args: list[bytes | str | int] = [batch.exchange, batch.key]
        if batch.delay_ms is None:
            args.append("1" if batch.mandatory else "0")
        else:
            args.append(batch.delay_ms)
        for message in batch.messages:
            args.extend(message)
        return self.session.scripts.command("publish" if batch.delay_ms is None else "delay", *args)
