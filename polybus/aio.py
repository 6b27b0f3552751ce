"""The asyncio API: ``async with polybus.aio.connect(url) as bus:``.

Same names and semantics as the blocking API (``polybus.connect``); every call is awaited.
"""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import Any

from polybus.core.bus import AsyncBus
from polybus.core.codecs import Codec
from polybus.core.dead_letter_queue import DeadLetter, DeadLetters
from polybus.core.message import AsyncMessage, PeekedMessage
from polybus.core.pubsub import PubSub
from polybus.core.retry import RetryPolicy
from polybus.core.router import Router
from polybus.core.rpc import Rpc
from polybus.core.subscription import Subscription
from polybus.core.transport import QueueStats, Transport
from polybus.core.worker import Worker
from polybus.core.workqueue import WorkQueue

__all__ = [
    "AsyncBus",
    "AsyncMessage",
    "DeadLetter",
    "DeadLetters",
    "PeekedMessage",
    "PubSub",
    "QueueStats",
    "RetryPolicy",
    "Router",
    "Rpc",
    "Subscription",
    "WorkQueue",
    "Worker",
    "connect",
]


class connect:  # noqa: N801 - used like a function: ``await connect()`` / ``async with connect()``
    """Connect a bus: URL from the argument, else ``$POLYBUS_URL``, else ``memory://``."""

    def __init__(
        self,
        url: str | None = None,
        *,
        codec: str | Codec = "json",
        transport: Transport | None = None,
    ) -> None:
        self.bus = AsyncBus(url, codec=codec, transport=transport)

    def __await__(self) -> Generator[Any, None, AsyncBus]:
        return self.bus._connect().__await__()

    async def __aenter__(self) -> AsyncBus:
        return await self.bus._connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.bus.close()
