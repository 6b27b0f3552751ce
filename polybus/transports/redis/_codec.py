"""Envelopes as stream entries: the body as its own binary field, the properties as JSON.

Entry fields: ``b`` body, ``m`` properties, ``x`` exchange, ``k`` routing key, and, when they
apply, ``pr`` priority, ``e`` deadline (ms, server clock), ``dc`` deliveries before this copy,
``dr``/``dq``/``dt`` why, from which queue and when (ms, first death) it was dead-lettered.

An entry that another program wrote, or that was damaged, is still delivered: what cannot be
read of it is its ``defect``, and the consumer dead-letters it.
"""

from __future__ import annotations

import json
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from polybus.core.headers import DEAD_AT, DEAD_QUEUE, DEAD_REASON
from polybus.core.transport import Envelope

PublishFields = tuple[bytes, bytes, str, str]
"""What a message is published as: body, properties (JSON), ttl in ms and priority ('' if none)."""

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_decoder = json.JSONDecoder()


def _no_default(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# ``json.dumps`` builds its C encoder anew on every call, most of its cost on these short lists;
# this one is built once. It skips the check for circular references, so it serves only
# properties without headers (everything else in them is a str, a number, a bool or None).
_encode_flat = (
    None
    if c_make_encoder is None
    else c_make_encoder(None, _no_default, encode_basestring, None, ":", ",", False, False, True)
)


def _loads(text: bytes) -> Any:
    """``json.loads`` without its encoding detection: properties are always UTF-8."""
    return _decoder.raw_decode(text.decode())[0]


def publish_fields(envelope: Envelope) -> PublishFields:
    """The ``PUBLISH`` script's four arguments for one message (``_publisher`` XADDs them
    itself when the script is not needed)."""
    values = [
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
    if envelope.headers or _encode_flat is None:
        properties = _dumps(values).encode()
    else:
        properties = "".join(_encode_flat(values, 0)).encode()
    ttl = "" if envelope.expiration is None else str(max(0, round(envelope.expiration * 1000)))
    priority = "" if envelope.priority is None else str(envelope.priority)
    return envelope.body, properties, ttl, priority


def deadline(fields: list[Any]) -> int | None:
    """An entry's deadline (ms, server clock), if it has one."""
    if len(fields) == 8:  # b, m, x, k: the plain case
        return None
    for name, value in zip(fields[::2], fields[1::2], strict=True):
        if name == b"e":
            return int(value)
    return None


def decode_entry(fields: list[Any]) -> tuple[Envelope, str, str, int, str | None]:
    """A stream entry's flat field list → (envelope, exchange, routing key, earlier deliveries,
    defect)."""
    try:
        return (*_decode(fields), None)
    except Exception as exc:  # never stop a consumer over one entry
        values = dict(zip(fields[::2], fields[1::2], strict=False))
        body = values.get(b"b", b"")
        return (
            Envelope(body if isinstance(body, bytes) else b""),
            "",
            "",
            0,
            (f"the stream entry cannot be read as a polybus message ({exc!r})"),
        )


def _decode(fields: list[Any]) -> tuple[Envelope, str, str, int]:
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
        headers[DEAD_REASON] = reason.decode()
        headers[DEAD_QUEUE] = values[b"dq"].decode()
        if b"dt" in values:
            headers.setdefault(DEAD_AT, int(values[b"dt"]))
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
