"""A pika channel whose synchronous AMQP methods are awaitable.

pika reports a method's reply through a callback and a channel's death through a close callback;
here each call waits on a future that the reply resolves and the closure fails, so no caller ever
waits on a channel that is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pika.channel
import pika.exceptions
from pika.adapters.asyncio_connection import AsyncioConnection

from polybus.core.errors import PolybusError
from polybus.transports.rabbitmq._convert import translate

ClosedHook = Callable[["AmqpChannel", BaseException], None]


class AmqpChannel:
    """One channel; ``closed_by`` is why it closed (a pika exception), once it has."""

    def __init__(
        self, connection: AsyncioConnection, channel: pika.channel.Channel, on_closed: ClosedHook
    ) -> None:
        self.connection = connection
        self.channel = channel
        self.closed_by: BaseException | None = None
        self._waiters: set[asyncio.Future[Any]] = set()
        self._on_closed = on_closed
        channel.add_on_close_callback(self._closed)

    @classmethod
    async def open(
        cls, connection: AsyncioConnection, doing: str, on_closed: ClosedHook | None = None
    ) -> AmqpChannel:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            channel = connection.channel(on_open_callback=lambda ch: _resolve(future, ch))
        except Exception as exc:
            raise translate(exc, doing) from exc
        wrapper = cls(connection, channel, on_closed or _ignore)
        await wrapper._wait(future, doing)
        return wrapper

    @property
    def is_open(self) -> bool:
        return self.closed_by is None and self.channel.is_open

    async def call(self, doing: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a synchronous AMQP method (``callback=`` is supplied) and return its reply."""
        if self.closed_by is not None:
            raise translate(self.closed_by, doing)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            method(*args, callback=lambda frame: _resolve(future, frame), **kwargs)
        except Exception as exc:
            raise translate(exc, doing) from exc
        return await self._wait(future, doing)

    async def _wait(self, future: asyncio.Future[Any], doing: str) -> Any:
        self._waiters.add(future)
        try:
            return await future
        except PolybusError:
            raise
        except pika.exceptions.AMQPError as exc:
            raise translate(exc, doing) from exc
        finally:
            self._waiters.discard(future)

    def close(self) -> None:
        """Close politely; closing a channel that is already closing is not an error."""
        if self.channel.is_open:
            self.channel.close()

    def _closed(self, _channel: pika.channel.Channel, reason: BaseException) -> None:
        self.closed_by = reason
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(reason)
        self._waiters.clear()
        self._on_closed(self, reason)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _ignore(_channel: AmqpChannel, _reason: BaseException) -> None:
    """A channel whose closure only its waiters need to hear about."""


def lost_connection(reason: BaseException) -> bool:
    """Whether a channel closed because its connection went away (not by the broker's or our
    own decision about the channel)."""
    return not isinstance(reason, pika.exceptions.ChannelClosed)


def broker_error(reason: BaseException) -> str | None:
    """The broker's words when it closed the connection over an error of the client's (a hard
    AMQP error such as FRAME_ERROR, codes 500 and up); None for anything else, such as a
    restart (CONNECTION_FORCED, 320) or a network failure."""
    if isinstance(reason, pika.exceptions.ConnectionClosedByBroker) and reason.reply_code >= 500:
        return f"{reason.reply_code} {reason.reply_text}"
    return None
