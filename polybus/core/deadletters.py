"""Dead letters: the headers that say why a message died, the same on every transport.

A message dies when it is rejected, expires, fails its handler once retries are exhausted, or
cannot be decoded. Where a broker moves it itself (RabbitMQ's dead-letter exchange, the memory
and Redis transports' rejects and expiries) the transport adds these headers, or derives them
from the broker's own (RabbitMQ's ``x-death`` stays beside them); where polybus moves it (a
handler's failure), ``dead_letter_headers`` describes the exception too.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from polybus.core.headers import (
    DEAD_AT,
    DEAD_ERROR,
    DEAD_MESSAGE,
    DEAD_QUEUE,
    DEAD_REASON,
    DEAD_TRACEBACK,
)

if TYPE_CHECKING:
    from polybus.core.bus import AsyncBus
    from polybus.core.subscription import ConsumeSpec
    from polybus.core.transport import Delivery

log = logging.getLogger("polybus")

Outcome = Literal["acked", "retried", "dead_lettered"]
"""How a worker's message ended."""

REJECTED = "rejected"
EXPIRED = "expired"
RETRIES_EXHAUSTED = "retries-exhausted"
NOT_RETRIED = "not-retried"
"""The handler raised what the worker's retry policy does not retry."""
UNDECODABLE = "undecodable"

MAX_TEXT = 2000
"""Characters kept of an exception's message and of its traceback (the end of it)."""


def dead_letter_headers(
    headers: dict[str, Any],
    *,
    queue: str,
    reason: str,
    error: BaseException | None = None,
    detail: str | None = None,
    at: float | None = None,
) -> dict[str, Any]:
    """``headers`` with the dead-letter headers of a death now (``at``, seconds since the
    epoch) on ``queue``; ``DEAD_AT`` keeps the time of the first death. ``error`` is the
    handler's exception; ``detail`` what made the message undecodable."""
    dead = {**headers, DEAD_QUEUE: queue, DEAD_REASON: reason}
    dead.setdefault(DEAD_AT, round((time.time() if at is None else at) * 1000))
    for name in (DEAD_ERROR, DEAD_MESSAGE, DEAD_TRACEBACK):
        dead.pop(name, None)
    if error is not None:
        dead[DEAD_ERROR] = type(error).__qualname__
        dead[DEAD_MESSAGE] = str(error)[:MAX_TEXT]
        dead[DEAD_TRACEBACK] = "".join(traceback.format_exception(error))[-MAX_TEXT:]
    elif detail is not None:
        dead[DEAD_MESSAGE] = detail[:MAX_TEXT]
    return dead


def is_dead_letter_queue(name: str) -> bool:
    """Whether a queue name is one polybus gives dead-letter queues (``<queue>.dead``): such a
    queue has no dead-letter queue of its own by default, so it is read with a plain
    ``bus.work_queue(name)``."""
    return name.endswith(".dead")


async def dead_letter(
    bus: AsyncBus,
    spec: ConsumeSpec,
    delivery: Delivery,
    reason: str,
    *,
    error: BaseException | None = None,
    detail: str | None = None,
) -> Outcome:
    """Move a delivery to its queue's dead-letter queue with the headers that say why: the
    copy is confirmed there before the original is acked, so the message is never lost (a
    crash in between leaves it in both). Without a dead-letter queue it is dropped (logged)."""
    if spec.auto_ack:
        log.error("message on %s dropped (%s): %s", spec.queue, reason, detail or error)
        return "dead_lettered"
    target = spec.options.dead_letter
    if target is None:
        log.error(
            "message on %s dropped, no dead-letter queue (%s): %s",
            spec.queue,
            reason,
            detail or repr(error),
        )
        await bus._broker.nack(delivery, requeue=False)
        return "dead_lettered"
    envelope = delivery.envelope
    headers = dead_letter_headers(
        envelope.headers, queue=spec.queue, reason=reason, error=error, detail=detail
    )
    await bus._broker.publish("", target, replace(envelope, headers=headers, expiration=None))
    await bus._broker.ack(delivery)
    log.error(
        "message %s on %s dead-lettered to %s (%s)", envelope.message_id, spec.queue, target, reason
    )
    return "dead_lettered"
