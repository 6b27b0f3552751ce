"""nats-py's errors as polybus's: the only place the two meet."""

from __future__ import annotations

import asyncio
import ssl

from nats import errors as nats_errors
from nats.js import errors as js_errors

from polybus.core.errors import ConnectionFailed, NotFound, PolybusError
from polybus.core.unreachable import network_reason

ERRORS: tuple[type[BaseException], ...] = (
    nats_errors.Error,
    js_errors.Error,
    OSError,
    TimeoutError,
    asyncio.TimeoutError,  # not yet TimeoutError on Python 3.10
)
"""What nats-py raises when a request fails or the connection is lost."""

FAILURES: tuple[type[BaseException], ...] = (PolybusError, *ERRORS)
"""What a call of this transport may fail with: its own errors and nats-py's."""

LOST: tuple[type[BaseException], ...] = (
    nats_errors.ConnectionClosedError,
    nats_errors.ConnectionReconnectingError,
    nats_errors.ConnectionDrainingError,
    nats_errors.StaleConnectionError,
    nats_errors.NoServersError,
    OSError,
)
"""What says the connection, not the request, failed."""


def translate(exc: BaseException, fallback: type[PolybusError], what: str) -> PolybusError:
    """A nats-py error as the polybus error it means, with ``exc`` as its cause."""
    if isinstance(exc, PolybusError):
        return exc
    error: PolybusError
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, nats_errors.TimeoutError)):
        error = fallback(f"{what}: NATS did not answer in time")
    elif isinstance(exc, js_errors.NotFoundError):
        error = NotFound(f"{what}: {exc.description or 'not found'}")
    elif isinstance(exc, LOST):
        error = ConnectionFailed(f"{what}: the connection to NATS is lost ({exc!r})")
    else:
        error = fallback(f"{what}: {exc!r}")
    error.__cause__ = exc
    return error


def telling(exc: BaseException) -> bool:
    """Whether an error says more than that the connection went: a refused login, a TLS
    failure."""
    return isinstance(exc, (nats_errors.AuthorizationError, ssl.SSLError)) or (
        "authorization" in str(exc).lower()
    )


def why_not_connected(exc: BaseException | None, where: str) -> str:
    """What a failed connection to ``where`` (host:port) means, in words: a refused login,
    then what the network says (``core/unreachable``), silence."""
    if exc is None:
        return f"{where} did not answer in time"
    text = str(exc) or type(exc).__name__
    if telling(exc) and not isinstance(exc, ssl.SSLError):
        return f"{where} refused the user name or password ({text})"
    causes = [c for c in (exc, exc.__cause__, exc.__context__) if c is not None]
    return network_reason(causes, where) or f"{where}: {text}"
