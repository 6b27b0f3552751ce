"""Delayed messages on JetStream 2.9, which cannot hold a message back until a time itself.

A delayed message is published, as any message, to its namespace's delay stream (file-stored,
work-queue retention, one durable pull consumer), with the time it falls due in a header. Every
connection that has seen the stream runs a ``DelayMover``: it pulls from that consumer and, for
each message, routes it as published then (the transport's own ``publish``) once it is due, then
acks it; a message not yet due is returned with a NAK that asks JetStream to deliver it again
exactly when it falls due. So the server keeps the time, nothing polls, and any live connection
of the namespace releases what a connection that has gone delayed.

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
from nats.js import errors as js_errors

from polybus.core.errors import NotFound, PolybusError
from polybus.core.transport import Envelope
from polybus.transports.nats._codec import decode
from polybus.transports.nats._errors import ERRORS

log = logging.getLogger("polybus.nats")

DUE_HEADER = "Polybus-Due"
"""When a delayed message falls due, in milliseconds since the epoch."""

BATCH = 100
PULL_WAIT = 5.0
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
        durable_name="polybus",
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=-1,
        max_ack_pending=-1,
    )


class DelayMover:
    """Pulls a namespace's delayed messages and routes each when it falls due."""

    def __init__(self, js: Any, stream: str, route: Route) -> None:
        self._js = js
        self._stream = stream
        self._route = route
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        subscription = None
        while True:
            try:
                if subscription is None:
                    subscription = await self._js.pull_subscribe_bind(
                        "polybus", stream=self._stream
                    )
                messages = await subscription.fetch(BATCH, timeout=PULL_WAIT)
            except (TimeoutError, asyncio.TimeoutError, js_errors.FetchTimeoutError):
                continue  # nothing came within the pull's life: ask again
            except ERRORS as exc:  # disconnected, or the stream is being recreated
                log.debug("delayed messages of %s: %r; pulling again", self._stream, exc)
                subscription = None
                await asyncio.sleep(RETRY_PAUSE)
                continue
            await asyncio.gather(*(self._release_or_wait(message) for message in messages))

    async def _release_or_wait(self, message: Any) -> None:
        try:
            due_ms = int((message.headers or {})[DUE_HEADER])
            wait = due_ms / 1000 - time.time()
            if wait > 0:
                await message.nak(delay=wait)
                return
            envelope, exchange, key, _, defect = decode(message.headers, message.data)
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
        except (KeyError, ValueError):
            log.error("dropped a message of %s without a due time", self._stream)
            with contextlib.suppress(*ERRORS):
                await message.ack()
