"""Checks of the arguments a call takes, other than names (``names``) and headers (``headers``).

Each check raises ``InvalidArgument`` naming the argument, what it got and what it accepts, at
the limits of ``limits``; the patterns call them first, so a bad argument fails its own call,
before anything is declared or sent, with the same error on every transport.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection
from typing import Any

from polybus.core.errors import InvalidArgument
from polybus.core.limits import MAX_PREFETCH, MAX_PRIORITY, MAX_PROPERTY, MAX_TTL, MIN_TTL


def check_known(options: Collection[str], known: Collection[str], call: str) -> None:
    """Refuse a keyword the call does not take (a misspelled option would otherwise be
    ignored at run time), with the closest known one."""
    for option in options:
        if option not in known:
            close = difflib.get_close_matches(option, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidArgument(
                f"{call}() got an unknown option {option!r}{hint} "
                f"(it takes {', '.join(sorted(known))})"
            )


def check_int(value: Any, name: str, low: int, high: int | None = None) -> int:
    """An ``int`` (not a bool) within ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name} must be an int, not {_shown(value)}")
    number = int(value)
    if number < low or (high is not None and number > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise InvalidArgument(f"{name} must be {bounds}, not {number}")
    return number


def check_seconds(
    value: Any, name: str, *, low: float = 0.0, high: float = math.inf, low_open: bool = False
) -> float:
    """A finite number of seconds within ``low..high`` (above ``low`` when ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{name} must be a number of seconds, not {_shown(value)}")
    seconds = float(value)
    too_low = seconds <= low if low_open else seconds < low
    if math.isnan(seconds) or too_low or seconds > high:
        above = f"more than {low:g}" if low_open else f"at least {low:g}"
        upper = f" and at most {high:g}" if high != math.inf else ""
        raise InvalidArgument(f"{name} must be {above}{upper} seconds, not {value!r}")
    return seconds


def check_timeout(value: Any, name: str = "timeout") -> float | None:
    """A wait: ``None`` (as long as it takes) or a finite number of seconds, 0 or more."""
    if value is None or (value.__class__ in _PLAIN_NUMBERS and 0 <= value < math.inf):
        return value  # the common case, once per receive, without the checks' calls
    return check_seconds(value, name)


_PLAIN_NUMBERS = (int, float)


def check_prefetch(value: Any, name: str = "prefetch") -> int:
    return check_int(value, name, 1, MAX_PREFETCH)


def check_priority(value: Any, name: str = "priority") -> int | None:
    return None if value is None else check_int(value, name, 0, MAX_PRIORITY)


def check_ttl(value: Any, name: str = "ttl") -> float | None:
    """A time-to-live in seconds, in the whole milliseconds brokers count (or ``None``)."""
    if value is None:
        return None
    return check_seconds(value, name, low=MIN_TTL, high=MAX_TTL)


def check_delay(value: Any, name: str = "delay") -> float | None:
    """A delay in seconds (``None`` or 0: none), at most the longest time-to-live, since
    RabbitMQ delays with one."""
    if value is None or value == 0:
        return None
    return check_seconds(value, name, high=MAX_TTL)


def check_property(value: Any, name: str) -> str | None:
    """``message_id``, ``correlation_id``, ``reply_to``: a str of at most 255 bytes."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a str, not {_shown(value)}")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise InvalidArgument(f"{name} holds a lone surrogate: not valid text") from None
    if size > MAX_PROPERTY:
        raise InvalidArgument(f"{name} must be at most {MAX_PROPERTY} bytes, not {size}")
    return str(value)


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name} must be True or False, not {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:40] + '…'}"
