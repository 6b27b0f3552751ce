"""polybus: one messaging API (work queue, pub/sub, routed, RPC) on RabbitMQ, Redis, NATS, memory.

    import polybus
    with polybus.connect() as bus:          # URL argument, else $POLYBUS_URL, else memory://
        bus.work_queue("tasks").send({"n": 1})

The asyncio API is ``polybus.aio``, with the same names.
"""

from __future__ import annotations

from polybus.blocking.bus import Bus, connect
from polybus.blocking.message import Message
from polybus.blocking.patterns import DeadLetters, PubSub, Router, Rpc, Worker, WorkQueue
from polybus.blocking.subscription import Subscription
from polybus.core.codecs import Codec, register_codec
from polybus.core.dead_letter_queue import DeadLetter
from polybus.core.errors import (
    CapabilityMissing,
    Closed,
    ConfigurationError,
    ConnectionFailed,
    DeclarationConflict,
    InvalidArgument,
    InvalidName,
    InvalidURL,
    MissingDependency,
    NotFound,
    PolybusError,
    PublishFailed,
    ReceiveTimeout,
    RemoteError,
    RpcTimeout,
    SerializationError,
    UnknownScheme,
    Unroutable,
)
from polybus.core.message import PeekedMessage
from polybus.core.retry import RetryPolicy
from polybus.core.transport import Capabilities, QueueStats, Transport

__version__ = "0.1.0"

__all__ = [
    "Bus",
    "Capabilities",
    "CapabilityMissing",
    "Closed",
    "Codec",
    "ConfigurationError",
    "ConnectionFailed",
    "DeadLetter",
    "DeadLetters",
    "DeclarationConflict",
    "InvalidArgument",
    "InvalidName",
    "InvalidURL",
    "Message",
    "MissingDependency",
    "NotFound",
    "PeekedMessage",
    "PolybusError",
    "PubSub",
    "PublishFailed",
    "QueueStats",
    "ReceiveTimeout",
    "RemoteError",
    "RetryPolicy",
    "Router",
    "Rpc",
    "RpcTimeout",
    "SerializationError",
    "Subscription",
    "Transport",
    "UnknownScheme",
    "Unroutable",
    "WorkQueue",
    "Worker",
    "connect",
    "register_codec",
]
