"""The NATS JetStream transport: ``nats://``, ``tls://`` and ``nats+tls://``."""

from polybus.transports.nats.transport import NatsTransport

__all__ = ["NatsTransport"]
