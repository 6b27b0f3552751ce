"""Names on NATS: every polybus name and key, as stream names, subjects and KV keys.

NATS refuses ``.``, ``*``, ``>``, whitespace and empty tokens in subjects, and more in stream
and bucket names; KV keys take only ``[-/_=.a-zA-Z0-9]``. polybus names (``[A-Za-z0-9_.:-]``)
and routing keys (any text) are therefore written as ``token``s: letters, digits and ``-`` as
they are, every other byte of their UTF-8 as ``_`` and two hex digits. A token is valid
everywhere NATS takes a name, and two names never share one.
"""

from __future__ import annotations

import functools
import hashlib
import re

from polybus.core.limits import MAX_PRIORITY

_KEPT = re.compile(rb"[A-Za-z0-9-]")
PREFIX = re.compile(r"[A-Za-z0-9-]+")  # a prefix must be a token as it is
MAX_STREAM = 255
LEVEL_ROOM = 5  # "_p255"
QUEUE_KEY = "q."
"""What the topology key of every queue's record starts with (then its token)."""
CONSUMER = "polybus"
"""The one durable consumer of every queue's stream."""


_BYTES = tuple(
    chr(byte) if _KEPT.fullmatch(bytes([byte])) else f"_{byte:02x}" for byte in range(256)
)


@functools.lru_cache(maxsize=4096)  # every publish and delivery names its queue again
def token(name: str) -> str:
    """``name`` as a NATS token (see the module's docstring)."""
    return "".join(_BYTES[byte] for byte in name.encode())


def name_of(written: str) -> str:
    """The name a ``token`` was written from (every ``_`` starts an escape: unambiguous)."""
    raw = re.sub(rb"_([0-9a-f]{2})", lambda m: bytes.fromhex(m[1].decode()), written.encode())
    return raw.decode()


class Names:
    """The NATS names of one prefix's queues, exchanges and records."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.topology_bucket = f"{prefix}_topology"

    def stream(self, queue: str, level: int = 0) -> str:
        """The stream of a queue's priority level: its token (and ``_p<level>`` above 0), or
        for a name too long for NATS's 255 bytes its first part and a digest of the whole."""
        name = f"{self.prefix}_q_{token(queue)}"
        if len(name) > MAX_STREAM - LEVEL_ROOM:
            digest = hashlib.sha256(queue.encode()).hexdigest()[:32]
            name = f"{name[: MAX_STREAM - LEVEL_ROOM - 33]}-{digest}"
        return name if level == 0 else f"{name}_p{level}"

    def subject(self, queue: str, priority: int = 0) -> str:
        """Where a message of that priority to the queue is published: a stream of the queue
        captures it, or for an exclusive queue its owner subscribes to it."""
        return f"{self.prefix}.q.{token(queue)}.{priority}"

    def subjects(self, queue: str) -> str:
        """Every subject of the queue (a wildcard)."""
        return f"{self.prefix}.q.{token(queue)}.*"

    def level_subjects(self, queue: str, level: int, max_priority: int | None) -> list[str]:
        """What the stream of a level captures: a queue without priorities, every priority; the
        top level, every priority from its own up (as RabbitMQ caps them); the others, theirs."""
        if max_priority is None:
            return [self.subjects(queue)]
        if level < max_priority:
            return [self.subject(queue, level)]
        return [self.subject(queue, p) for p in range(level, MAX_PRIORITY + 1)]

    @property
    def topology_stream(self) -> str:
        """The stream that holds the topology bucket (JetStream's naming of buckets)."""
        return f"KV_{self.topology_bucket}"

    def record_subject(self, key: str) -> str:
        """The subject a topology record is stored under (``>`` for all of them)."""
        return f"$KV.{self.topology_bucket}.{key}"

    def queue_key(self, queue: str) -> str:
        return f"{QUEUE_KEY}{token(queue)}"

    def exchange_key(self, exchange: str) -> str:
        return f"x.{token(exchange)}"

    def stream_prefix(self, namespace: str) -> str:
        """The start of the stream names of every queue in a namespace (for cleanups)."""
        return f"{self.prefix}_q_{token(namespace + '.')}"
