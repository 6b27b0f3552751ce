"""Names on NATS: every polybus name and key, as stream names, subjects and KV keys.

NATS refuses ``.``, ``*``, ``>``, whitespace and empty tokens in subjects, and more in stream
and bucket names; KV keys take only ``[-/_=.a-zA-Z0-9]``. polybus names (``[A-Za-z0-9_.:-]``)
and routing keys (any text) are therefore written as ``token``s: letters, digits and ``-`` as
they are, every other byte of their UTF-8 as ``_`` and two hex digits. A token is valid
everywhere NATS takes a name, and two names never share one.
"""

from __future__ import annotations

import re

_KEPT = re.compile(rb"[A-Za-z0-9-]")
PREFIX = re.compile(r"[A-Za-z0-9-]+")  # a prefix must be a token as it is
CONSUMER = "polybus"
"""The one durable consumer of every queue's stream."""


def token(name: str) -> str:
    """``name`` as a NATS token (see the module's docstring)."""
    return "".join(
        chr(byte) if _KEPT.fullmatch(bytes([byte])) else f"_{byte:02x}" for byte in name.encode()
    )


class Names:
    """The NATS names of one prefix's queues, exchanges and records."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.topology_bucket = f"{prefix}_topology"
        self.presence_bucket = f"{prefix}_presence"

    def stream(self, queue: str, level: int = 0) -> str:
        """The stream of a queue's priority level."""
        return f"{self.prefix}_q_{token(queue)}_{level}"

    def subject(self, queue: str, level: int = 0) -> str:
        """What a queue's stream (level) captures."""
        return f"{self.prefix}.q.{token(queue)}.{level}"

    def transient_subject(self, queue: str) -> str:
        """Where an exclusive queue's messages go: a plain NATS subject its owner reads."""
        return f"{self.prefix}.t.{token(queue)}"

    def queue_key(self, queue: str) -> str:
        return f"q.{token(queue)}"

    def exchange_key(self, exchange: str) -> str:
        return f"x.{token(exchange)}"

    def stream_prefix(self, namespace: str) -> str:
        """The start of the stream names of every queue in a namespace (for cleanups)."""
        return f"{self.prefix}_q_{token(namespace + '.')}"
