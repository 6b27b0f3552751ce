"""Delayed messages on JetStream 2.9, which cannot hold a message back until a time itself.

A delayed message is published, as any message, to its namespace's delay stream (file-stored,
work-queue retention, one durable consumer), with the time it falls due in a header. Every
connection that has seen the stream runs a ``DelayMover``, which takes that consumer's
deliveries (a push consumer whose queue group every mover joins) and routes each message as
published then (the transport's own ``publish``) once it is due, then acks it. A message due
within half the ack wait is held until its time on this side (a timer: precise, and within the
ack wait, so nobody else gets it meanwhile); one due later is returned with a NAK asking
JetStream to deliver it again a quarter of the ack wait before it falls due. So the server
keeps the long waits, nothing polls, and any live connection of the namespace releases what a
connection that has gone delayed.

A message is routed, then acked: a mover that dies in between leaves it to be routed again (at
least once, as every polybus delivery). Due times are the publisher's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js import api

from polybus.core.errors import NotFound, PolybusError
from polybus.core.transport import Envelope
from polybus.transports.nats._codec import decode
from polybus.transports.nats._errors import ERRORS

log = logging.getLogger("polybus.nats")

DUE_HEADER = "Polybus-Due"
"""When a delayed message falls due, in milliseconds since the epoch."""

MOVERS = "polybus-movers"
"""The durable push consumer of a delay stream, and the queue group its movers share."""
RETRY_PAUSE = 1.0
"""Seconds before a message whose routing failed (the server unreachable) is tried again."""

Route = Callable[[str, str, Envelope], Awaitable[None]]
RELEASE_FAILURES: tuple[type[BaseException], ...] = (PolybusError, *ERRORS)


def delay_stream_config(stream: str, subject: str, replicas: int) -> api.StreamConfig:
    return api.StreamConfig(
        name=stream,
        subjects=[subject],
        retention=api.RetentionPolicy.WORK_QUEUE,
        storage=api.StorageType.FILE,
        num_replicas=replicas,
        description="polybus delayed messages",
    )


def delay_consumer_config(ack_wait: float) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=-1,
        max_ack_pending=-1,
    )


class DelayMover:
    """Takes a namespace's delayed messages as JetStream pushes them (one push consumer, its
    deliveries shared by every connection's mover) and routes each when it falls due."""

    def __init__(self, js: Any, stream: str, subject: str, route: Route, ack_wait: float) -> None:
        self._js = js
        self._stream = stream
        self._subject = subject
        self._route = route
        self._ack_wait = ack_wait
        self._hold = ack_wait / 2
        self._subscription: Any = None
        self._working: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Join the movers of the stream (creating their consumer the first time)."""
        self._subscription = await self._js.subscribe(
            self._subject,
            queue=MOVERS,
            durable=MOVERS,
            stream=self._stream,
            cb=self._on_message,
            manual_ack=True,
            config=delay_consumer_config(self._ack_wait),
        )

    async def stop(self) -> None:
        """Stop taking messages; what is held comes back to another mover after its ack wait."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(*ERRORS):
                await subscription.unsubscribe()
        working = list(self._working)
        for task in working:
            task.cancel()
        for task in working:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _on_message(self, message: Any) -> None:
        # nats-py calls this once at a time: the work goes on in a task of its own
        task = asyncio.ensure_future(self._release_or_wait(message))
        self._working.add(task)
        task.add_done_callback(self._working.discard)

    async def _release_or_wait(self, message: Any) -> None:
        try:
            due_ms = int((message.headers or {})[DUE_HEADER])
        except (KeyError, ValueError):
            log.error("dropped a message of %s without a due time", self._stream)
            with contextlib.suppress(*ERRORS):
                await message.ack()
            return
        wait = due_ms / 1000 - time.time()
        if wait > self._hold:
            with contextlib.suppress(*ERRORS):  # else JetStream delivers it after the ack wait
                await message.nak(delay=wait - self._hold / 2)
        else:
            await self._release(message, wait)

    async def _release(self, message: Any, wait: float = 0.0) -> None:
        """Route a message as published then, once ``wait`` seconds have passed, and ack it;
        if it cannot be routed now, it comes back a little later."""
        if wait > 0:
            await asyncio.sleep(wait)
        envelope, exchange, key, _, defect = decode(message.headers, message.data)
        try:
            if defect is None:
                # an exchange deleted meanwhile routes it nowhere, as on any broker
                with contextlib.suppress(NotFound):
                    await self._route(exchange, key, envelope)
            else:
                log.error("dropped a delayed message of %s: %s", self._stream, defect)
            await message.ack()
        except RELEASE_FAILURES as exc:
            log.warning("could not release a delayed message yet (%r); trying again", exc)
            with contextlib.suppress(*ERRORS):
                await message.nak(delay=RETRY_PAUSE)
