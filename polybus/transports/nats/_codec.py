"""Envelopes as NATS messages: the body as the payload, the rest as one header.

NATS header values lose their leading and trailing blanks and their line breaks, and header
names are restricted, so the properties travel as one JSON array (ASCII only) in the header
``Polybus``: content type, headers, message id, correlation id, reply-to, timestamp, priority,
expiration, persistent, the exchange and routing key it was published with, and its deadline
(ms since the epoch, or null). A message another program wrote, or one that cannot be read, is
delivered with its ``defect``.
"""

from __future__ import annotations

import json

from polybus.core.transport import Envelope

HEADER = "Polybus"
RETURNED = "Polybus-Returned"
"""On a copy of a message returned to its queue (``_consumer.PullConsumer``): the deliveries
the message had before and when its queue first stored it (ns since the epoch), ``"<n> <ns>"``:
the copy's delivery count and ``message_ttl`` go on from the original's."""
OVERHEAD = 64
"""Bytes of the header block around the properties (``NATS/1.0``, the name, line ends)."""

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def encode(
    envelope: Envelope, exchange: str, key: str, deadline_ms: int | None
) -> tuple[dict[str, str], bytes]:
    """The headers and payload a message is published with."""
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
            exchange,
            key,
            deadline_ms,
        ]
    )
    return {HEADER: properties}, envelope.body


def size(headers: dict[str, str], payload: bytes) -> int:
    """Bytes NATS counts against its ``max_payload``: the header block and the payload."""
    return OVERHEAD + sum(len(n) + len(v) for n, v in headers.items()) + len(payload)


def decode(
    headers: dict[str, str] | None, payload: bytes
) -> tuple[Envelope, str, str, int | None, str | None]:
    """(envelope, exchange, routing key, deadline ms, defect) of a received message."""
    try:
        (
            content_type,
            properties,
            message_id,
            correlation_id,
            reply_to,
            timestamp,
            priority,
            expiration,
            persistent,
            exchange,
            key,
            deadline_ms,
        ) = json.loads((headers or {})[HEADER])
        envelope = Envelope(
            payload,
            content_type,
            properties,
            message_id,
            correlation_id,
            reply_to,
            timestamp,
            priority,
            expiration,
            persistent,
        )
        if not isinstance(properties, dict):
            raise TypeError(f"headers are a {type(properties).__name__}")
        return envelope, exchange, key, deadline_ms, None
    except Exception as exc:  # never stop a consumer over one message
        defect = f"the NATS message cannot be read as a polybus message ({exc!r})"
        return Envelope(payload), "", "", None, defect


def history(headers: dict[str, str] | None, delivered: int, stored_ns: int) -> tuple[int, int]:
    """(deliveries so far, ns since the epoch its queue first stored it) of a stored message
    JetStream delivered ``delivered`` times and stored at ``stored_ns``, counting what it had
    before it was returned (``RETURNED``)."""
    try:
        before, first_ns = (int(part) for part in (headers or {})[RETURNED].split())
    except (KeyError, ValueError):
        return delivered, stored_ns
    return before + delivered, first_ns


def returned(headers: dict[str, str] | None, delivered: int, stored_ns: int) -> dict[str, str]:
    """The headers of the copy that returns a delivered message to its queue: its own, and
    its history so far (see ``history``)."""
    deliveries, first_ns = history(headers, delivered, stored_ns)
    return {**(headers or {}), RETURNED: f"{deliveries} {first_ns}"}
