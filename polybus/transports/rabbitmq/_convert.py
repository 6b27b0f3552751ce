"""Pure translations between polybus and AMQP: URL → connection parameters, queue options →
queue arguments, envelope ↔ message properties, pika exception → ``PolybusError``."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from polybus.core.errors import (
    Closed,
    ConnectionFailed,
    DeclarationConflict,
    InvalidURL,
    NotFound,
    PolybusError,
    SerializationError,
)
from polybus.core.transport import Envelope, QueueOptions
from polybus.core.url import BrokerURL

# AMQP timestamps are whole seconds; the exact float travels in this header, beside them.
TIMESTAMP_HEADER = "x-polybus-timestamp"
# what quorum queues count redeliveries in (absent on classic queues)
DELIVERY_COUNT_HEADER = "x-delivery-count"

QUEUE_TYPES = ("quorum", "classic")


@dataclass(frozen=True, slots=True)
class Settings:
    """What the URL configures beyond pika's connection parameters."""

    parameters: pika.ConnectionParameters
    queue_type: str
    connect_timeout: float
    reconnect_timeout: float


def settings_from_url(url: BrokerURL) -> Settings:
    """Connection parameters from an ``amqp://`` / ``amqps://`` URL.

    Query options: ``heartbeat`` (s, default 30), ``connect_timeout`` (s, default 5),
    ``reconnect_timeout`` (how long an operation waits for a lost connection to come back, s,
    default 30), ``queue_type`` (``quorum``, the default for durable queues, or ``classic``),
    ``namespace`` (polybus's name prefix).
    """
    options = url.options
    try:
        heartbeat = int(options.get("heartbeat", "30"))
        connect_timeout = float(options.get("connect_timeout", "5"))
        reconnect_timeout = float(options.get("reconnect_timeout", "30"))
    except ValueError as exc:
        raise InvalidURL(f"bad option in {url.redacted()!r}: {exc}") from exc
    queue_type = options.get("queue_type", "quorum")
    if queue_type not in QUEUE_TYPES:
        raise InvalidURL(
            f"queue_type={queue_type!r} in {url.redacted()!r}: use one of {', '.join(QUEUE_TYPES)}"
        )
    secure = url.scheme == "amqps"
    vhost = url.path[1:] if len(url.path) > 1 else "/"
    parameters = pika.ConnectionParameters(
        host=url.host or "localhost",
        port=url.port or (5671 if secure else 5672),
        virtual_host=vhost,
        credentials=pika.PlainCredentials(url.username or "guest", url.password or "guest"),
        heartbeat=heartbeat,
        connection_attempts=1,
        socket_timeout=connect_timeout,
        stack_timeout=connect_timeout,
        blocked_connection_timeout=reconnect_timeout,
        ssl_options=pika.SSLOptions(ssl.create_default_context(), url.host) if secure else None,
    )
    return Settings(parameters, queue_type, connect_timeout, reconnect_timeout)


def queue_arguments(options: QueueOptions, queue_type: str) -> dict[str, Any]:
    """The ``x-`` arguments a queue is declared with.

    Durable, shared queues without priorities are quorum queues (unless the URL asks for
    classic ones): they count deliveries exactly. Quorum queues cannot be transient,
    exclusive, auto-deleted or prioritised, so those are classic queues.
    """
    arguments: dict[str, Any] = {}
    if (
        queue_type == "quorum"
        and options.durable
        and not options.exclusive
        and not options.auto_delete
        and options.max_priority is None
    ):
        arguments["x-queue-type"] = "quorum"
    if options.dead_letter is not None:
        arguments["x-dead-letter-exchange"] = ""
        arguments["x-dead-letter-routing-key"] = options.dead_letter
    if options.message_ttl is not None:
        arguments["x-message-ttl"] = round(options.message_ttl * 1000)
    if options.max_priority is not None:
        arguments["x-max-priority"] = options.max_priority
    return arguments


def to_properties(envelope: Envelope) -> pika.BasicProperties:
    """AMQP properties for an envelope; the exact timestamp rides in a header."""
    headers = envelope.headers
    timestamp = envelope.timestamp
    whole: int | None = None
    if timestamp is not None:
        whole = int(timestamp)
        if whole != timestamp:
            headers = {**headers, TIMESTAMP_HEADER: repr(timestamp)}
    expiration = envelope.expiration
    return pika.BasicProperties(
        content_type=envelope.content_type,
        headers=headers or None,
        delivery_mode=2 if envelope.persistent else 1,
        priority=envelope.priority,
        correlation_id=envelope.correlation_id,
        reply_to=envelope.reply_to,
        expiration=str(max(0, round(expiration * 1000))) if expiration is not None else None,
        message_id=envelope.message_id,
        timestamp=whole,
    )


def to_envelope(properties: pika.BasicProperties, body: bytes) -> tuple[Envelope, int]:
    """The envelope of a received message, and how many times it was delivered before."""
    headers: dict[str, Any] = properties.headers or {}
    previous = 0
    timestamp = float(properties.timestamp) if properties.timestamp is not None else None
    if headers:
        exact = headers.pop(TIMESTAMP_HEADER, None)
        if exact is not None:
            timestamp = float(exact)
        previous = int(headers.pop(DELIVERY_COUNT_HEADER, 0))
    expiration = properties.expiration
    envelope = Envelope(
        body,
        properties.content_type or "application/octet-stream",
        headers,
        properties.message_id,
        properties.correlation_id,
        properties.reply_to,
        timestamp,
        properties.priority,
        int(expiration) / 1000 if expiration is not None else None,
        properties.delivery_mode == 2,
    )
    return envelope, previous


def translate(exc: BaseException, doing: str) -> PolybusError:
    """The ``PolybusError`` for a pika exception (or a channel's close reason)."""
    if isinstance(exc, PolybusError):
        return exc
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
        code, text = exc.reply_code, exc.reply_text
        if code in (405, 406):  # RESOURCE_LOCKED, PRECONDITION_FAILED
            hint = ""
            if "x-queue-type" in text:
                hint = (
                    " (the queue exists as another queue type: to share queues declared by other"
                    " programs as classic queues, add ?queue_type=classic to the URL)"
                )
            return DeclarationConflict(f"{doing}: {text}{hint}")
        if code == 404:
            return NotFound(f"{doing}: {text}")
        return PolybusError(f"{doing}: the broker refused ({code} {text})")
    if isinstance(exc, pika.exceptions.UnsupportedAMQPFieldException):
        return SerializationError(
            f"{doing}: a header value cannot travel over AMQP ({exc}); use str, int, bool, "
            "bytes, None, lists or dicts of them"
        )
    if isinstance(exc, pika.exceptions.ChannelClosedByClient):
        return Closed(f"{doing}: the transport is closing")
    if isinstance(exc, pika.exceptions.AMQPError | OSError):
        return ConnectionFailed(f"{doing}: the connection to RabbitMQ failed ({exc!r})")
    return PolybusError(f"{doing}: {exc!r}")
