"""Retry policies: how a work-queue worker tries a message again after its handler raised.

A retry is the message sent again with a delay (where the transport can delay), never a sleep
that would hold a prefetch slot: while it waits, the messages behind it are handled. It keeps
its id, headers and properties, and carries its retry count (``x-polybus-retries``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from polybus.core.arguments import check_int, check_seconds
from polybus.core.errors import InvalidArgument
from polybus.core.headers import RETRIES
from polybus.core.limits import MAX_TTL


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` retries, the first ``backoff`` seconds after the failure, each next one
    ``factor`` times later, at most ``max_backoff``, each up to ``jitter`` (a fraction) later
    still, at random, so that messages that failed together do not all come back together.

    An exception of a ``dead_letter_on`` type, or of none of the ``retry_on`` types, is not
    retried: the message goes to the dead-letter queue at once (``not-retried``).
    """

    max_retries: int = 3
    backoff: float = 0.5
    factor: float = 2.0
    max_backoff: float = 300.0
    jitter: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    dead_letter_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        check_int(self.max_retries, "max_retries", 0)
        check_seconds(self.backoff, "backoff", high=MAX_TTL)
        check_seconds(self.max_backoff, "max_backoff", high=MAX_TTL)
        _check_number(self.factor, "factor", 1, 1000)
        _check_number(self.jitter, "jitter", 0, 1)
        for name in ("retry_on", "dead_letter_on"):
            types = getattr(self, name)
            if not isinstance(types, tuple) or not all(
                isinstance(t, type) and issubclass(t, BaseException) for t in types
            ):
                raise InvalidArgument(f"{name} must be a tuple of exception types, not {types!r}")

    def retries(self, error: BaseException, done: int) -> bool:
        """Whether a message that failed with ``error`` after ``done`` retries is tried again."""
        if isinstance(error, self.dead_letter_on) or not isinstance(error, self.retry_on):
            return False
        return done < self.max_retries

    def delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1 for the first)."""
        base = min(self.max_backoff, self.backoff * self.factor ** (retry - 1))
        return base * (1 + self.jitter * random.random())


def _check_number(value: object, name: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidArgument(f"{name} must be a number from {low:g} to {high:g}, not {value!r}")


def retry_policy(retries: int | RetryPolicy) -> RetryPolicy:
    """A worker's ``retries``: a policy, or a number of retries with the default backoff."""
    if isinstance(retries, RetryPolicy):
        return retries
    return RetryPolicy(max_retries=check_int(retries, "retries", 0))


def retries_of(headers: dict[str, Any]) -> int:
    """The retry count a message carries; anything unreadable counts as none."""
    value = headers.get(RETRIES, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
