"""Opening and dropping nats-py connections: the options every connection of a transport
shares, and a close that ends even on a connection that stopped taking data."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from nats.aio.client import Client

from polybus.core.tasks import cancelled

log = logging.getLogger("polybus.nats")

CLOSE_WAIT = 1.0
"""Seconds a close may spend writing out what nats-py still holds before the socket is cut."""


def options(
    servers: list[str],
    user: str | None,
    password: str | None,
    tls: ssl.SSLContext | None,
    timeout: float,
) -> dict[str, Any]:
    """``Client.connect`` keywords for the servers (``host:port`` each) of one server or a
    cluster."""
    scheme = "tls" if tls is not None else "nats"
    return {  # nats-py takes seconds as floats, though typed int
        "servers": [f"{scheme}://{where}" for where in servers],
        "user": user or None,
        "password": password or None,
        "tls": tls,
        "connect_timeout": timeout,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,  # never give up after a connection was lost
        "reconnect_time_wait": 0.25,
        "name": "polybus",
    }


def server_of(nc: Client) -> str | None:
    """``host:port`` of the server a connection is on now (of a cluster's, after failover)."""
    url = nc.connected_url
    return None if url is None else url.netloc.rpartition("@")[2]


def drop_socket(nc: Client) -> None:
    """Cut the socket without a goodbye: nats-py's close first writes out what it holds, which
    never ends on a connection that stopped taking data (tests/nats checks that these
    attributes exist in the nats-py installed)."""
    writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
    if writer is not None:
        writer.transport.abort()


async def disconnect(nc: Client) -> None:
    """Close, cutting the socket if the close has not ended within ``CLOSE_WAIT``."""
    closing = asyncio.ensure_future(nc.close())
    done, _ = await asyncio.wait({closing}, timeout=CLOSE_WAIT)
    if not done:
        drop_socket(nc)
        await cancelled(closing)
    elif not closing.cancelled() and closing.exception() is not None:
        log.debug("closing a NATS connection: %r", closing.exception())
