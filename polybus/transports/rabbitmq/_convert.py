"""Pure translations between polybus and AMQP: URL → connection parameters, queue options →
queue arguments, envelope ↔ message properties, pika exception → ``PolybusError``."""

from __future__ import annotations

import calendar
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pika
import pika.exceptions

from polybus.core.conflicts import exchange_conflict, queue_conflict
from polybus.core.deadletters import EXPIRED, REJECTED
from polybus.core.errors import (
    Closed,
    ConfigurationError,
    ConnectionFailed,
    DeclarationConflict,
    InvalidURL,
    NotFound,
    PolybusError,
    SerializationError,
)
from polybus.core.headers import DEAD_AT, DEAD_QUEUE, DEAD_REASON
from polybus.core.options import TLS, UrlOption, choice, count, seconds, tls_context
from polybus.core.transport import Envelope, QueueOptions
from polybus.core.unreachable import network_reason
from polybus.core.url import BrokerURL
from polybus.transports.rabbitmq._delays import without_delay_traces

# AMQP timestamps are whole seconds; the exact float travels in this header, beside them.
TIMESTAMP_HEADER = "x-polybus-timestamp"
# what quorum queues count redeliveries in (absent on classic queues)
DELIVERY_COUNT_HEADER = "x-delivery-count"

QUEUE_TYPES = ("quorum", "classic")


@dataclass(frozen=True, slots=True)
class Settings:
    """What the URL configures beyond pika's connection parameters."""

    nodes: tuple[pika.ConnectionParameters, ...]  # one per host of the URL, in its order
    queue_type: str
    quorum_size: int | None
    connect_timeout: float
    reconnect_timeout: float


def _heartbeat(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be whole seconds from 0 (no heartbeats) to 65535")
    return value


URL_OPTIONS = (
    UrlOption(
        "heartbeat",
        _heartbeat,
        30,
        "seconds between AMQP heartbeats; 0 turns them off (default 30)",
    ),
    UrlOption("connect_timeout", seconds(), 5.0, "seconds to connect (default 5)"),
    UrlOption(
        "reconnect_timeout",
        seconds(),
        30.0,
        "seconds a lost connection is tried again before publishes still waiting for their"
        " confirmation fail (default 30)",
    ),
    UrlOption(
        "queue_type",
        choice(*QUEUE_TYPES),
        "quorum",
        "the type of durable shared queues: quorum (default) or classic",
    ),
    UrlOption(
        "quorum_size",
        count(1, 99),
        None,
        "the nodes of a cluster that keep a copy of each new quorum queue (default:"
        " RabbitMQ's, every node)",
    ),
    *TLS,
)


def settings_from_url(url: BrokerURL) -> Settings:
    """Connection parameters from an ``amqp://`` / ``amqps://`` URL whose options were
    checked (``url.settings``; the options are ``URL_OPTIONS``).

    :raises InvalidURL: TLS options on ``amqp://``, or TLS files that cannot be read.
    """
    given = url.settings
    connect_timeout = given["connect_timeout"]
    secure = url.scheme == "amqps"
    context = None
    if secure:
        try:
            context = tls_context(given)
        except ConfigurationError as exc:
            raise InvalidURL(f"{url.redacted()!r}: {exc}") from exc
    elif any(name.startswith("ssl_") for name in url.options):
        raise InvalidURL(f"{url.redacted()!r}: ssl_ options need an amqps:// URL")
    vhost = url.path[1:] if len(url.path) > 1 else "/"
    nodes = tuple(
        pika.ConnectionParameters(
            host=host,
            port=port or (5671 if secure else 5672),
            virtual_host=vhost,
            credentials=pika.PlainCredentials(url.username or "guest", url.password or "guest"),
            heartbeat=given["heartbeat"],
            connection_attempts=1,
            socket_timeout=connect_timeout,
            stack_timeout=connect_timeout,
            blocked_connection_timeout=given["reconnect_timeout"],
            ssl_options=pika.SSLOptions(context, host) if secure else None,
        )
        for host, port in url.hosts or (("localhost", None),)
    )
    return Settings(
        nodes,
        given["queue_type"],
        given["quorum_size"],
        connect_timeout,
        given["reconnect_timeout"],
    )


def queue_arguments(
    options: QueueOptions, queue_type: str, quorum_size: int | None = None
) -> dict[str, Any]:
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
        if quorum_size is not None:
            arguments["x-quorum-initial-group-size"] = quorum_size
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


def to_envelope(properties: pika.BasicProperties, body: bytes) -> tuple[Envelope, int, str | None]:
    """The envelope of a received message, how many times it was delivered before, and what
    could not be read of it (None when everything could): a message another program sent with
    a malformed property is still delivered, to be dead-lettered with the reason."""
    headers: dict[str, Any] = dict(properties.headers or {})
    defects: list[str] = []
    timestamp = _read(defects, "timestamp", properties.timestamp, float)
    exact = headers.pop(TIMESTAMP_HEADER, None)
    if exact is not None:
        timestamp = _read(defects, TIMESTAMP_HEADER, exact, float) or timestamp
    previous = _read(defects, DELIVERY_COUNT_HEADER, headers.pop(DELIVERY_COUNT_HEADER, 0), int)
    expiration = _read(defects, "expiration", properties.expiration, lambda ms: int(ms) / 1000)
    priority = _read(defects, "priority", properties.priority, int)
    headers = without_delay_traces({name: _carried(value) for name, value in headers.items()})
    if "x-death" in headers and DEAD_REASON not in headers:
        headers.update(_dead_letter_headers(headers))
    envelope = Envelope(
        body,
        properties.content_type or "application/octet-stream",
        headers,
        properties.message_id,
        properties.correlation_id,
        properties.reply_to,
        timestamp,
        priority,
        expiration,
        properties.delivery_mode == 2,
    )
    return envelope, previous or 0, "; ".join(defects) or None


def _read(defects: list[str], name: str, value: Any, convert: Callable[[Any], Any]) -> Any:
    if value is None:
        return None
    try:
        return convert(value)
    except (TypeError, ValueError, OverflowError):
        defects.append(f"the {name} property {value!r:.60} is not what it should be")
        return None


def _carried(value: Any) -> Any:
    """A header value as polybus carries it: AMQP timestamps (in ``x-death``, say) as whole
    seconds since the epoch, and 64-bit integers (pika's ``long``, an ``int`` subclass) as plain
    ``int``, as every other transport gives them, so that headers read from RabbitMQ can be
    sent again."""
    if isinstance(value, datetime):
        return calendar.timegm(value.utctimetuple())
    if isinstance(value, int) and type(value) is not int and not isinstance(value, bool):
        return int(value)
    if isinstance(value, list):
        return [_carried(item) for item in value]
    if isinstance(value, dict):
        return {key: _carried(item) for key, item in value.items()}
    return value


# RabbitMQ's x-death reasons, as polybus names them
_DEATH_REASONS = {"rejected": REJECTED, "expired": EXPIRED}


def _dead_letter_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """polybus's dead-letter headers for a message RabbitMQ dead-lettered itself (a reject or
    an expiry), read from its ``x-death`` (newest death first)."""
    deaths = [death for death in headers["x-death"] if isinstance(death, dict)]
    if not deaths:
        return {}
    latest = deaths[0]
    reason = str(latest.get("reason", ""))
    times = [death["time"] for death in deaths if isinstance(death.get("time"), int)]
    dead = {
        DEAD_QUEUE: str(latest.get("queue", "")),
        DEAD_REASON: _DEATH_REASONS.get(reason, reason),
    }
    if times:
        dead[DEAD_AT] = min(times) * 1000
    return dead


def translate(
    exc: BaseException, doing: str, refused: type[PolybusError] = DeclarationConflict
) -> PolybusError:
    """The ``PolybusError`` for a pika exception (or a channel's close reason); ``refused`` is
    what the broker's PRECONDITION_FAILED means for this operation."""
    if isinstance(exc, PolybusError):
        return exc
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
        code, text = exc.reply_code, exc.reply_text
        if refused is not DeclarationConflict and code == 406:
            return refused(f"{doing}: RabbitMQ refused it ({code} {text})")
        if code == 406 and (conflict := _inequivalent(text)) is not None:
            return conflict
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


_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for (?P<what>queue|exchange) '(?P<name>[^']+)'"
    r" in vhost '[^']*': received (?P<asked>.+?) but current is (?P<existing>.+)$"
)
_VALUE = re.compile(r"(?:the value )?'(?P<value>[^']*)'(?: of type '[^']+')?")
# RabbitMQ's argument → (polybus's option, the value as polybus writes it)
_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "durable": ("durable", lambda v: v == "true"),
    "exclusive": ("exclusive", lambda v: v == "true"),
    "auto_delete": ("auto_delete", lambda v: v == "true"),
    "type": ("kind", str),
    "x-dead-letter-routing-key": ("dead_letter", str),
    "x-dead-letter-exchange": ("dead_letter", lambda v: "a dead-letter exchange"),
    "x-message-ttl": ("message_ttl", lambda v: int(v) / 1000),
    "x-max-priority": ("max_priority", int),
    "x-queue-type": ("queue_type", str),
}


def _inequivalent(text: str) -> DeclarationConflict | None:
    """RabbitMQ's "inequivalent arg" refusal in polybus's words (see ``core.conflicts``)."""
    found = _INEQUIVALENT.search(text)
    if found is None:
        return None
    arg, what, name = found["arg"], found["what"], found["name"]
    option, convert = _OPTIONS.get(arg, (arg, str))

    def value(described: str) -> Any:
        if described.strip() == "none":
            return None
        matched = _VALUE.fullmatch(described.strip())
        raw = matched["value"] if matched else described
        try:
            return convert(raw)
        except ValueError:
            return raw

    existing, asked = {option: value(found["existing"])}, {option: value(found["asked"])}
    if option == "queue_type":  # no x-queue-type: a classic queue
        has, wants = existing[option] or "classic", asked[option] or "classic"
        return DeclarationConflict(
            f"queue {name!r} exists as a {has} queue, but this URL declares {wants} queues:"
            f" add ?queue_type={has} to the URL, or pass declare=False to use it as it is"
        )
    describe = queue_conflict if what == "queue" else exchange_conflict
    return describe(name, existing, asked)


def why_not_connected(exc: BaseException, where: str, vhost: str) -> str:
    """What a failed connection to ``where`` (host:port) means, in words: a refused login, a
    missing virtual host, then what the network says (``core/unreachable``), silence. pika
    wraps the cause in workflow exceptions; they are unwrapped here."""
    causes = _causes(exc)
    if any(isinstance(c, pika.exceptions.ProbableAuthenticationError) for c in causes):
        return f"{where} refused the user name or password"
    if any(isinstance(c, pika.exceptions.ProbableAccessDeniedError) for c in causes):
        return f"{where} has no virtual host {vhost!r} this user may use"
    if (reason := network_reason(causes, where)) is not None:
        return reason
    if any(isinstance(c, (TimeoutError, socket.timeout)) for c in causes):
        return f"{where} did not answer in time"
    return f"{where}: {_last(causes)}"


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps: pika's workflow errors keep theirs in ``exceptions``
    and in their arguments."""
    found: list[BaseException] = []
    todo = [exc]
    while todo and len(found) < 20:
        current = todo.pop()
        found.append(current)
        todo += [
            e for e in getattr(current, "exceptions", None) or [] if isinstance(e, BaseException)
        ]
        todo += [a for a in current.args if isinstance(a, BaseException)]
        for inner in (current.__cause__, current.__context__, getattr(current, "exception", None)):
            if isinstance(inner, BaseException):
                todo.append(inner)
    return found


def _last(causes: list[BaseException]) -> str:
    innermost = causes[-1]
    return str(innermost) or type(innermost).__name__
