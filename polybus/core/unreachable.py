"""Why a connection could not be made, in the words every transport uses for what sockets and
TLS report. A transport asks its broker's own reasons first (a refused login, a missing
database), then these, then falls back to the error's text."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence


def network_reason(causes: Sequence[BaseException], where: str) -> str | None:
    """What ``causes`` (an error and what it wraps, outermost first) say about reaching
    ``where`` (host:port) — a certificate that did not verify, a failed TLS handshake, nothing
    listening, an unknown host — or None when none of them is a socket or TLS failure."""
    if not causes:
        return None
    innermost = causes[-1]
    detail = str(innermost) or type(innermost).__name__
    if any(isinstance(c, ssl.SSLCertVerificationError) for c in causes) or any(
        "CERTIFICATE_VERIFY_FAILED" in str(c) for c in causes
    ):
        return f"the TLS certificate of {where} could not be verified ({detail})"
    if any(isinstance(c, ssl.SSLError) for c in causes):
        return f"the TLS handshake with {where} failed ({detail})"
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return f"nothing accepts connections at {where} (connection refused)"
    if any(isinstance(c, socket.gaierror) for c in causes):
        return f"the host of {where} is unknown ({detail})"
    return None
