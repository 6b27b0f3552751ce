"""Message headers: what every broker can carry, checked and copied before anything is sent.

Redis and NATS keep headers as JSON, RabbitMQ as AMQP field tables (no floats, 64-bit integers, one
frame for all properties), memory as the objects they are. So a header is accepted only if every
broker carries it unchanged: ``str``, ``int`` (64-bit), ``bool``, ``None``, and lists and dicts of
them. The accepted headers are copied as plain values (an ``IntEnum`` becomes its ``int``), so
what a consumer reads is the same on every transport and a caller that changes its dict after
sending changes nothing in flight.

Names starting with ``x-polybus-`` belong to polybus (the ``PUBLIC`` ones, such as the
dead-letter headers, may be sent again when a dead letter is replayed), and ``x-delivery-count``
to the brokers that count deliveries in it: a message carrying them would lie to its consumer.
Every name polybus gives a header is defined here, once.
"""

from __future__ import annotations

import json
from typing import Any

from polybus.core.errors import SerializationError
from polybus.core.limits import MAX_HEADER_DEPTH, MAX_HEADERS, MAX_KEY

POLYBUS_PREFIX = "x-polybus-"
DELAY_ROUTE = "polybus-delay-queue"
"""Where a delayed message waits, for a broker that routes delays by a header (RabbitMQ's
headers exchange matches no ``x-`` header, hence the name); never delivered."""
BROKER_OWNED = frozenset({"x-delivery-count", DELAY_ROUTE})

RETRIES = "x-polybus-retries"
"""How many times a worker has sent the message again after its handler failed (absent: 0)."""

# Why a message is in a dead-letter queue: the same names on every transport (RabbitMQ's own
# ``x-death`` stays beside them where the broker moved the message).
DEAD_QUEUE = "x-polybus-dead-queue"
"""The queue the message died on."""
DEAD_REASON = "x-polybus-dead-reason"
"""Why: ``rejected``, ``expired``, ``retries-exhausted`` or ``undecodable``."""
DEAD_ERROR = "x-polybus-dead-error"
"""The type name of the handler's exception (``retries-exhausted``, ``undecodable``)."""
DEAD_MESSAGE = "x-polybus-dead-message"
"""The exception's message, at most ``deadletters.MAX_TEXT`` characters."""
DEAD_TRACEBACK = "x-polybus-dead-traceback"
"""The end of the exception's traceback, at most ``deadletters.MAX_TEXT`` characters."""
DEAD_AT = "x-polybus-dead-at"
"""When it first died, in milliseconds since the epoch."""

DEATH = frozenset({DEAD_QUEUE, DEAD_REASON, DEAD_ERROR, DEAD_MESSAGE, DEAD_TRACEBACK, DEAD_AT})
"""The headers of a dead letter's death."""
DEATH_HISTORY = frozenset(
    {
        "x-death",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-first-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-last-death-exchange",
    }
)
"""A broker's own record of a message's deaths (RabbitMQ's): a dead letter replayed to its
queue leaves it behind, or it would read as dead there."""

PUBLIC = DEATH | {RETRIES}
"""The ``x-polybus-`` headers a sender may carry (a dead letter resent with its headers)."""

_ascii_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_CARRY = (
    "use str, int (64-bit), bool, None, or lists and dicts of them (a float or a date as a str);"
    " nothing was sent"
)


def checked_headers(headers: Any) -> dict[str, Any]:
    """A plain copy of ``headers``, or ``SerializationError`` saying which header is wrong and
    what to send instead."""
    if not isinstance(headers, dict):
        raise SerializationError(
            f"headers must be a dict of header name to value, not a {type(headers).__name__}"
        )
    copy: dict[str, Any] = {}
    size = 4
    for name, value in headers.items():
        _check_name(name, "header name")
        if name in BROKER_OWNED or (name.startswith(POLYBUS_PREFIX) and name not in PUBLIC):
            raise SerializationError(
                f"header {name!r} is reserved: brokers and polybus set it themselves, and a"
                " consumer would misread it; choose another name"
            )
        plain, value_size = _plain(value, repr(name), 0)
        copy[name] = plain
        size += 2 + _utf8_size(name) + value_size
    as_json = len(_ascii_json(copy)) if copy else 0
    if max(size, as_json) > MAX_HEADERS:
        raise SerializationError(
            f"the headers take {size} bytes as an AMQP field table and {as_json} as JSON, more"
            f" than the {MAX_HEADERS} every broker carries (RabbitMQ sends all properties in one"
            " frame, NATS all headers in 64 KiB); put large values in the body; nothing was sent"
        )
    return copy


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str):
        raise SerializationError(f"{what} {name!r} is not a str; {_CARRY}")
    if _utf8_size(name) > MAX_KEY:
        raise SerializationError(f"{what} {name[:40]!r}… is longer than {MAX_KEY} bytes")


def _utf8_size(text: str) -> int:
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        raise SerializationError(
            f"{text[:40]!r} is not valid text (it holds a lone surrogate); nothing was sent"
        ) from None


def _plain(value: Any, where: str, depth: int) -> tuple[Any, int]:
    """The value as plain types, and its size in an AMQP field table (type octet excluded)."""
    if value is None:
        return None, 0
    if isinstance(value, bool):
        return bool(value), 1
    if isinstance(value, int):
        number = int(value)  # int() before comparing: an IntEnum compares slowly
        if _INT64_MIN <= number <= _INT64_MAX:
            return number, 8
        problem = f"{number} does not fit in 64 bits"
    elif isinstance(value, str):
        text = str(value)
        return text, 4 + _utf8_size(text)
    elif depth >= MAX_HEADER_DEPTH:
        problem = f"nests deeper than {MAX_HEADER_DEPTH} levels"
    elif isinstance(value, list):
        items, size = [], 4
        for index, item in enumerate(value):
            plain, item_size = _plain(item, f"{where}[{index}]", depth + 1)
            items.append(plain)
            size += 1 + item_size
        return items, size
    elif isinstance(value, dict):
        table, size = {}, 4
        for key, item in value.items():
            _check_name(key, f"header {where} has a key that")
            plain, item_size = _plain(item, f"{where}[{key!r}]", depth + 1)
            table[key] = plain
            size += 2 + _utf8_size(key) + item_size
        return table, size
    else:
        problem = f"is a {type(value).__name__}"
    raise SerializationError(
        f"header {where} {problem}, which not every broker can carry; {_CARRY}"
    )
