"""The transport interface: broker primitives only.

A transport knows queues, exchanges, bindings, publishing with confirmation and consuming with
prefetch. It never knows what a worker, a subscription or an RPC is; the patterns in
``polybus.core`` are written once on top of these primitives.

Every primitive runs on the event loop the transport was connected on. ``deliver`` callbacks are
called on that loop too, must not block, and must not raise.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from polybus.core.errors import CapabilityMissing, InvalidURL
from polybus.core.options import UrlOption
from polybus.core.url import BrokerURL


class ExchangeKind(str, enum.Enum):
    """How an exchange routes: to every bound queue, by exact key, or by topic pattern."""

    FANOUT = "fanout"
    DIRECT = "direct"
    TOPIC = "topic"


@dataclass(frozen=True, slots=True)
class QueueOptions:
    """Everything a queue is declared with; redeclaring with other options is a conflict.

    ``dead_letter`` names the queue that rejected and expired messages move to.
    ``message_ttl`` is in seconds. ``max_priority`` enables priorities 0..max_priority.
    """

    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    dead_letter: str | None = None
    message_ttl: float | None = None
    max_priority: int | None = None


@dataclass(slots=True)
class Envelope:
    """The bytes and properties that travel with a message, the same on every transport.

    ``timestamp`` is seconds since the epoch; ``expiration`` is a time-to-live in seconds.
    ``delay`` is for ``publish`` only: the seconds before the message may be delivered (it is
    routed then, by the bindings of that time); it never travels with the message.
    """

    body: bytes
    content_type: str = "application/octet-stream"
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    timestamp: float | None = None
    priority: int | None = None
    expiration: float | None = None
    persistent: bool = True
    delay: float | None = None


@dataclass(slots=True)
class Delivery:
    """A message handed to a consumer; ``tag`` is the transport's own handle for settling it.

    ``defect`` says why the transport could not read the message as sent (a malformed header,
    say): the envelope then holds what could be read, and the consumer dead-letters it.
    """

    envelope: Envelope
    exchange: str
    routing_key: str
    redelivered: bool
    delivery_count: int
    tag: Any
    consumer_tag: str = ""
    defect: str | None = None


DeliverCallback = Callable[[Delivery], None]


@dataclass(frozen=True, slots=True)
class QueueStats:
    """How a queue is doing: ready messages, and, where the broker says, those delivered and
    not yet acked and the consumers reading it (``None``: the broker does not say)."""

    name: str
    ready: int
    unacked: int | None = None
    consumers: int | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a transport can do; the conformance suite skips, with the reason, what it cannot."""

    persistence: bool = False
    """Durable queues and persistent messages survive a broker restart."""
    priority: bool = False
    ttl: bool = False
    dead_letter: bool = False
    delivery_count: bool = False
    """Redeliveries carry an exact delivery count (else only the ``redelivered`` flag)."""
    mandatory: bool = False
    """A mandatory publish that matches no queue raises ``Unroutable``."""
    delay: bool = False
    """A publish may ask for its message to be delivered no earlier than ``delay`` seconds
    later, durably (``Envelope.delay``)."""
    peek: bool = False
    """A queue's ready messages can be read without consuming them (``Transport.peek``)."""
    list_queues: bool = False
    """The broker can list its queues (``Transport.queue_names``)."""
    reason: str = ""
    """Why the missing capabilities are missing, shown on every skip they cause."""


class Transport(ABC):
    """Broker primitives. Subclasses are registered by URL scheme (see ``polybus.core.url``).

    Errors: every method raises only ``PolybusError`` subclasses — ``ConnectionFailed`` when the
    broker is unreachable, ``DeclarationConflict``, ``NotFound``, ``PublishFailed``; a client
    library's exception never escapes.
    """

    url_options: ClassVar[tuple[UrlOption, ...]] = ()
    """The query options this transport's URLs take, beside ``polybus.core.options.COMMON``."""

    one_host_hint: ClassVar[str] = ""
    """Said after "takes one host" when a URL names several where one is taken."""

    @classmethod
    def takes_several_hosts(cls, url: BrokerURL) -> bool:
        """Whether ``url`` may name several hosts (the nodes of a cluster), comma-separated."""
        return False

    def __init__(self, url: BrokerURL) -> None:
        """Keep the URL, its options checked and parsed into ``url.settings``.

        :raises InvalidURL: an option is unknown or has a wrong value, or the URL names
            several hosts where the transport takes one.
        """
        if len(url.hosts) > 1 and not self.takes_several_hosts(url):
            raise InvalidURL(
                f"{url.redacted()!r}: {url.scheme}:// takes one host, not {len(url.hosts)}"
                f"{self.one_host_hint}"
            )
        self.url = url.configured(self.url_options)
        self.capabilities = self.capabilities_for(self.url)

    @classmethod
    def capabilities_for(cls, url: BrokerURL) -> Capabilities:
        """What this transport can do on ``url``: known from the URL alone, before connecting
        (the conformance suite asks it to skip, with the reason, what it cannot)."""
        return Capabilities()

    @abstractmethod
    async def connect(self) -> None:
        """Connect, or raise ``ConnectionFailed`` quickly (never hang)."""

    @abstractmethod
    async def close(self) -> None:
        """Cancel consumers, return their unacked messages to their queues, disconnect."""

    @abstractmethod
    async def abort(self) -> None:
        """Drop the connection as a crashed process would: no acks, no cancels, no goodbye.

        The broker must redeliver this connection's unacked messages to other consumers and delete
        its exclusive queues. Used by fault tests; after it the transport is unusable.
        """

    @abstractmethod
    async def declare_queue(self, name: str, options: QueueOptions) -> None:
        """Create the queue, or check that it exists with the same options.

        :raises DeclarationConflict: it exists with other options.
        """

    @abstractmethod
    async def delete_queue(self, name: str) -> None:
        """Delete the queue and its messages; deleting a missing queue is not an error."""

    @abstractmethod
    async def purge_queue(self, name: str) -> int:
        """Drop the queue's ready messages and return how many there were."""

    @abstractmethod
    async def queue_size(self, name: str) -> int:
        """Ready messages in the queue (not counting those delivered and unacked).

        :raises NotFound: the queue does not exist.
        """

    async def queue_stats(self, name: str) -> QueueStats:
        """The queue's ready and unacked messages and its consumers, as far as the broker
        says (``None`` where it does not).

        :raises NotFound: the queue does not exist.
        """
        return QueueStats(name, await self.queue_size(name))

    async def queue_names(self) -> list[str]:
        """The names of the broker's queues that patterns use (not a transport's internal
        ones, such as where delayed messages wait), sorted; only where
        ``capabilities.list_queues``.

        :raises CapabilityMissing: the broker cannot list its queues.
        """
        raise CapabilityMissing(
            f"{self.url.scheme}:// cannot list queues"
            f" ({self.capabilities.reason or 'not supported'}); name the queues instead"
        )

    async def peek(self, name: str, limit: int) -> list[Delivery]:
        """The first ``limit`` ready messages of the queue, in the order they would be
        delivered, left where they are (no consumer sees a difference: not redelivered, not
        counted); only where ``capabilities.peek``. Each ``Delivery`` has ``tag`` ``None`` and
        ``delivery_count`` the deliveries so far (0 if none).

        :raises NotFound: the queue does not exist.
        :raises CapabilityMissing: the broker cannot read a queue without consuming it.
        """
        raise CapabilityMissing(
            f"{self.url.scheme}:// cannot read a queue without consuming it"
            f" ({self.capabilities.reason or 'not supported'})"
        )

    @abstractmethod
    async def declare_exchange(self, name: str, kind: ExchangeKind, durable: bool) -> None:
        """Create the exchange, or check it exists with the same kind and durability.

        :raises DeclarationConflict: it exists with another kind or durability.
        """

    @abstractmethod
    async def check_exchange(self, name: str) -> None:
        """Return if the exchange exists (declared by anyone, any way).

        :raises NotFound: it does not.
        """

    @abstractmethod
    async def delete_exchange(self, name: str) -> None:
        """Delete the exchange and its bindings; deleting a missing one is not an error."""

    @abstractmethod
    async def bind(self, queue: str, exchange: str, key: str) -> None:
        """Route messages from the exchange to the queue when ``key`` matches.

        :raises NotFound: the queue or the exchange does not exist.
        """

    @abstractmethod
    async def publish(
        self, exchange: str, key: str, envelope: Envelope, *, mandatory: bool = False
    ) -> None:
        """Publish and return once the broker has taken responsibility for the message.

        Exchange ``""`` is the default exchange: it routes to the queue named ``key``. A message
        that matches no queue is dropped, unless ``mandatory``, when ``Unroutable`` is raised.
        With ``envelope.delay`` (only where ``capabilities.delay``; never with ``mandatory``
        or an ``expiration``) the message is kept, as durably as the envelope asks, and routed
        no earlier than that many seconds later.

        :raises PublishFailed: the broker refused the message or the outcome is unknown.
        """

    async def publish_unconfirmed(self, exchange: str, key: str, envelope: Envelope) -> None:
        """Publish without waiting for the broker to confirm it: return once the message is
        handed to the connection, ahead of anything this transport sends after (an ack). For a
        sender that learns of a loss another way (a request whose answer does not come in
        time); it is ``publish`` unless a transport can save the round trip.

        :raises PublishFailed: the message could not be handed over.
        """
        await self.publish(exchange, key, envelope)

    async def publish_many(
        self, exchange: str, items: Sequence[tuple[str, Envelope]], *, mandatory: bool = False
    ) -> None:
        """Publish ``(key, envelope)`` pairs, in order; transports override this to pipeline."""
        for key, envelope in items:
            await self.publish(exchange, key, envelope, mandatory=mandatory)

    @abstractmethod
    async def consume(
        self, queue: str, deliver: DeliverCallback, *, prefetch: int, auto_ack: bool = False
    ) -> str:
        """Start delivering the queue's messages to ``deliver``; return a consumer tag.

        With manual acks, the consumer never holds more than ``prefetch`` unacked messages. With
        ``auto_ack`` a message counts as acked once delivered.

        :raises NotFound: the queue does not exist.
        """

    @abstractmethod
    async def cancel(self, consumer_tag: str) -> None:
        """Stop delivering to the consumer; its unacked messages stay unacked until settled."""

    @abstractmethod
    async def ack(self, delivery: Delivery) -> None:
        """Remove the delivered message from its queue.

        May return before the broker has seen it, as AMQP's basic.ack does, so that acks can be
        batched; an ack that never arrives means a redelivery (at least once), never a loss.
        ``close()`` must send the acks still on their way.
        """

    @abstractmethod
    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        """Return the message to its queue (``requeue``), or drop it / dead-letter it."""
