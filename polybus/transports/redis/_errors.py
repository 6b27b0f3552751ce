"""redis-py's errors as polybus's: the only place the two meet."""

from __future__ import annotations

from redis import exceptions as redis_errors

from polybus.core.errors import DeclarationConflict, NotFound, PolybusError, Unroutable

ERRORS: tuple[type[BaseException], ...] = (redis_errors.RedisError, OSError)
"""What redis-py raises when a command fails or the connection is lost."""


def translate(exc: BaseException, fallback: type[PolybusError], what: str) -> PolybusError:
    """A redis-py error as the polybus error it means (``exc`` as its cause): the scripts' own
    errors start with the name of the polybus error they stand for; anything else is
    ``fallback``."""
    error = _meaning(exc, fallback, what)
    error.__cause__ = exc
    return error


def _meaning(exc: BaseException, fallback: type[PolybusError], what: str) -> PolybusError:
    message = str(exc)
    if isinstance(exc, redis_errors.ResponseError):
        if message.startswith("NOGROUP"):  # a read on a stream that was deleted
            return NotFound(f"{what}: the queue was deleted")
        for prefix, kind in (
            ("NOTFOUND ", NotFound),
            ("CONFLICT ", DeclarationConflict),
            ("UNROUTABLE ", Unroutable),
        ):
            if message.startswith(prefix):
                return kind(message[len(prefix) :])
    return fallback(f"{what}: {exc!r}")
