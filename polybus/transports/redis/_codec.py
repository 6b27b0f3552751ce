"""Envelopes as stream entries: the body as its own binary field, the properties as JSON.

Entry fields: ``b`` body, ``m`` properties, ``x`` exchange, ``k`` routing key, and, when they
apply, ``pr`` priority, ``e`` deadline (ms, server clock), ``dc`` deliveries before this copy,
``dr``/``dq`` why and from which queue it was dead-lettered.
"""

from __future__ import annotations

import json
from typing import Any

from polybus.core.transport import Envelope

DEATH_REASON = "x-death-reason"
DEATH_QUEUE = "x-death-queue"

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_loads = json.loads


def publish_args(envelope: Envelope) -> tuple[bytes, str, str, str]:
    """The four ``PUBLISH`` script arguments of one message: body, properties, ttl, priority."""
    properties = _dumps(
        [
            envelope.content_type,
            envelope.headers,
            envelope.message_id,
            envelope.correlation_id,
            envelope.reply_to,
            envelope.timestamp,
            envelope.priority,
            envelope.expiration,
            envelope.persistent,
        ]
    )
    ttl = "" if envelope.expiration is None else str(max(0, round(envelope.expiration * 1000)))
    priority = "" if envelope.priority is None else str(envelope.priority)
    return envelope.body, properties, ttl, priority


def decode_entry(fields: list[Any]) -> tuple[Envelope, str, str, int]:
    """A stream entry's flat field list → (envelope, exchange, routing key, earlier deliveries)."""
    if len(fields) == 8:  # b, m, x, k in the order PUBLISH writes them: nothing else to look at
        body, properties, exchange, key = fields[1], fields[3], fields[5], fields[7]
        envelope = Envelope(body, *_loads(properties))
        return envelope, exchange.decode(), key.decode(), 0
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    (
        content_type,
        headers,
        message_id,
        correlation_id,
        reply_to,
        timestamp,
        priority,
        expiration,
        persistent,
    ) = _loads(values[b"m"])
    reason = values.get(b"dr")
    if reason is not None:
        headers[DEATH_REASON] = reason.decode()
        headers[DEATH_QUEUE] = values[b"dq"].decode()
        expiration = None
    envelope = Envelope(
        values[b"b"],
        content_type,
        headers,
        message_id,
        correlation_id,
        reply_to,
        timestamp,
        priority,
        expiration,
        persistent,
    )
    earlier = int(values[b"dc"]) if b"dc" in values else 0
    return envelope, values[b"x"].decode(), values[b"k"].decode(), earlier
