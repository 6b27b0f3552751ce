"""redis-py's errors as polybus's: the only place the two meet."""

from __future__ import annotations

import json
import socket
import ssl

from redis import exceptions as redis_errors

from polybus.core.conflicts import exchange_conflict, queue_conflict
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
    """What a failed connection to ``where`` (host:port) means, in words: refused, unknown
    host, a certificate that did not verify, a refused login, a missing database, silence."""
    text = str(exc)
    causes = [exc, exc.__cause__, exc.__context__]
    if any(isinstance(cause, ssl.SSLCertVerificationError) for cause in causes) or (
        "CERTIFICATE_VERIFY_FAILED" in text
    ):
        return f"the TLS certificate of {where} could not be verified ({text})"
    if any(isinstance(cause, ssl.SSLError) for cause in causes):
        return f"the TLS handshake with {where} failed ({text})"
    if isinstance(exc, redis_errors.AuthenticationError) or any(
        refusal in text for refusal in ("WRONGPASS", "NOAUTH", "invalid username-password")
    ):
        return f"{where} refused the user name or password ({text})"
    if "DB index is out of range" in text or "invalid DB index" in text:
        return f"{where} has no database {db} ({text})"
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return f"nothing accepts connections at {where} (connection refused)"
    if any(isinstance(cause, socket.gaierror) for cause in causes):
        return f"the host of {where} is unknown ({text})"
    if isinstance(exc, (redis_errors.TimeoutError, TimeoutError)):
        return f"{where} did not answer in time ({text})"
    return f"{where}: {text or type(exc).__name__}"
