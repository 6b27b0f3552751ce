"""Delayed messages on a RabbitMQ without the delayed-message plugin: a queue per delay level.

A delayed message is published to the namespace's delay exchange (a headers exchange), which
routes it by one header to the queue of its level and target exchange: a quorum queue
whose ``x-message-ttl`` is the level and whose dead-letter exchange is the target. When the TTL
runs out RabbitMQ dead-letters the message to the target with its own routing key, and the
target routes it as any message published then. Every message of one queue has the same TTL,
so the queue's head is always the first due: RabbitMQ expires messages only at the head.

A delay is rounded up to its level, so a message is never early and late by at most one level
step: 50 ms, or a sixteenth of the delay above 800 ms. The cost is a quorum queue (and a
binding) per level and target exchange in use, deleted ten minutes after its last use.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from polybus.core.headers import DELAY_ROUTE
from polybus.core.limits import MAX_BROKER_NAME

DELAY_HEADER = DELAY_ROUTE
"""The header the delay exchange routes by: the name of the message's delay queue (a headers
exchange ignores every ``x-`` header)."""

MIN_STEP_MS = 50
UNUSED_MS = 600_000
"""A delay queue is deleted this long (beyond its level) after it was last declared: a queue
that takes messages is declared again at least every ``REDECLARE`` seconds, so it outlives the
last message it holds, and the levels nobody uses any more go away."""
REDECLARE = 60.0


def level_ms(delay: float) -> int:
    """The delay level (ms) a delay of ``delay`` seconds is rounded up to."""
    ms = max(1, math.ceil(delay * 1000))
    step: int = max(MIN_STEP_MS, 2 ** math.floor(math.log2(ms)) // 16)
    return math.ceil(ms / step) * step


def delay_exchange(namespace: str) -> str:
    """The namespace's delay exchange. Its ``~`` is in no name a user may give."""
    return f"{namespace}.~delay" if namespace else "~delay"


def delay_queue(namespace: str, exchange: str, level: int) -> str:
    """The queue that holds the messages for ``exchange`` (``""``: the default exchange)
    delayed by ``level`` ms."""
    name = f"{delay_exchange(namespace)}.{level}ms~{exchange}"
    if len(name.encode()) > MAX_BROKER_NAME:
        digest = hashlib.sha256(exchange.encode()).hexdigest()[:32]
        name = f"{delay_exchange(namespace)}.{level}ms~{digest}"
    return name


def delay_queue_arguments(exchange: str, level: int) -> dict[str, Any]:
    """A level's queue: a quorum queue (replicated on a cluster), its TTL the level,
    dead-lettering to the target exchange with each message's own routing key. Dead-lettering
    is at most once: RabbitMQ 3.10's at-least-once strategy leaves messages of a queue without
    consumers unexpired (rabbitmq-server#10718), so a message that falls due while the broker
    boots may be lost, dead-lettered before its target queue is up (docs/operating.md)."""
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": level,
        "x-dead-letter-exchange": exchange,
        "x-expires": level + UNUSED_MS,
    }


def without_delay_traces(headers: dict[str, Any]) -> dict[str, Any]:
    """A delivered message's headers less what its delay left on it: the routing header and
    the ``x-death`` entries (and ``x-first-death-*``) of its wait in a delay queue, which was
    no death."""
    if DELAY_HEADER not in headers:
        return headers
    waited = headers.pop(DELAY_HEADER)
    deaths = headers.get("x-death")
    if isinstance(deaths, list):
        kept = [d for d in deaths if not (isinstance(d, dict) and d.get("queue") == waited)]
        if kept:
            headers["x-death"] = kept
        else:
            headers.pop("x-death")
    if headers.get("x-first-death-queue") == waited:
        for name in ("x-first-death-queue", "x-first-death-reason", "x-first-death-exchange"):
            headers.pop(name, None)
    return headers
