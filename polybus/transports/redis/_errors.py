"""redis-py's errors as polybus's: the only place the two meet."""

from __future__ import annotations

import json

from redis import exceptions as redis_errors

from polybus.core.conflicts import exchange_conflict, queue_conflict
from polybus.core.errors import DeclarationConflict, NotFound, PolybusError, Unroutable
from polybus.core.unreachable import network_reason

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
        if message.startswith("CONFLICT "):
            return _conflict(message[len("CONFLICT ") :])
        for prefix, kind in (("NOTFOUND ", NotFound), ("UNROUTABLE ", Unroutable)):
            if message.startswith(prefix):
                return kind(message[len(prefix) :])
    return fallback(f"{what}: {exc!r}")


def _conflict(detail: str) -> DeclarationConflict:
    """A script's ``CONFLICT <queue|exchange>\t<name>\t<existing>\t<asked>`` (options as
    JSON), described in polybus's words."""
    what, name, existing, asked = detail.split("\t")
    describe = queue_conflict if what == "queue" else exchange_conflict
    return describe(name, json.loads(existing), json.loads(asked))


def why_not_connected(exc: BaseException, where: str, db: int) -> str:
    """What a failed connection to ``where`` (host:port) means, in words: a refused login, a
    missing database, then what the network says (``core/unreachable``), silence."""
    text = str(exc)
    if isinstance(exc, redis_errors.AuthenticationError) or any(
        refusal in text for refusal in ("WRONGPASS", "NOAUTH", "invalid username-password")
    ):
        return f"{where} refused the user name or password ({text})"
    if "DB index is out of range" in text or "invalid DB index" in text:
        return f"{where} has no database {db} ({text})"
    causes = [c for c in (exc, exc.__cause__, exc.__context__) if c is not None]
    if (reason := network_reason(causes, where)) is not None:
        return reason
    if isinstance(exc, (redis_errors.TimeoutError, TimeoutError)):
        return f"{where} did not answer in time ({text})"
    return f"{where}: {text or type(exc).__name__}"
