"""pika's asyncio connection, writing a message at once and the rest of a loop turn together.

pika hands every frame to its transport on its own (three per published message: method,
header, body; one per ack), and its transport sends only from a writability callback, one loop
turn later and after two ``epoll_ctl`` calls, and reads 4 KB at a time. Here the frames of one
message are one write; the first write of a loop turn goes to the socket at once (an RPC request
or reply leaves without waiting for the turn to end); later writes of the same turn are joined
and sent together when the turn ends; reads are 64 KB, through pika's own size knobs. The order
of bytes on the wire is unchanged.

This leans on pika names that are not its public API; ``PIKA_INTERNALS`` lists them, and a test
fails loudly if a pika release moves one (``pyproject.toml`` bounds pika to the tested range).
Over TLS (``amqps://``) only the joining and the read size apply: the direct write would bypass
the state machine pika's TLS transport keeps for renegotiation (a write may need a read first).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport

RECV_BYTES = 64 * 1024  # per recv(): pika reads 4 KB
CONSUME_BYTES = 1024 * 1024  # per readable event, before yielding to the loop: pika's is 100 KB

PIKA_INTERNALS: dict[str, tuple[Any, str, tuple[str, ...]]] = {
    # what: (owner, method, the parameters polybus calls or overrides it with)
    "a connection is told its transport": (
        AsyncioConnection,
        "_proto_connection_made",
        ("self", "transport"),
    ),
    "frames are handed to the transport": (
        AsyncioConnection,
        "_output_marshaled_frames",
        ("self", "marshaled_frames"),
    ),
    "bytes are written": (AsyncioConnection, "_adapter_emit_data", ("self", "data")),
    "a connection is dropped without AMQP's goodbye": (
        AsyncioConnection,
        "_terminate_stream",
        ("self", "error"),
    ),
}
"""The pika methods this transport relies on, checked by a test; so are the attributes it
reads on a live connection: the connection's ``_transport``, and the plaintext transport's
``_sock``, ``_MAX_RECV_BYTES`` and ``_MAX_CONSUME_BYTES``."""


class CoalescingConnection(AsyncioConnection):  # type: ignore[misc]  # pika is untyped
    """An ``AsyncioConnection`` that sends the first write of a loop turn at once, joins the
    others, and reads in large pieces."""

    _chunks: list[bytes] | None = None  # written this turn after the first; None: none yet

    def _proto_connection_made(self, transport: Any) -> None:
        transport._MAX_RECV_BYTES = RECV_BYTES
        transport._MAX_CONSUME_BYTES = CONSUME_BYTES
        super()._proto_connection_made(transport)

    def _output_marshaled_frames(self, marshaled_frames: Sequence[bytes]) -> None:
        self.frames_sent += len(marshaled_frames)
        data = b"".join(marshaled_frames)
        self.bytes_sent += len(data)
        self._adapter_emit_data(data)

    def _adapter_emit_data(self, data: bytes) -> None:
        chunks = self._chunks
        if chunks is not None:
            chunks.append(data)
            return
        self._chunks = []
        asyncio.get_running_loop().call_soon(self._end_turn)
        self._send(data)

    def _end_turn(self) -> None:
        chunks, self._chunks = self._chunks, None
        if chunks:
            self._send(b"".join(chunks))

    def _send(self, data: bytes) -> None:
        """To the socket now when pika has nothing buffered; what does not fit, through pika."""
        transport = self._transport
        if transport is None:
            return
        if type(transport) is _AsyncPlaintextTransport and not transport.get_write_buffer_size():
            try:
                sent = transport._sock.send(data)
            except OSError:
                sent = 0  # would block, or broken: pika's own write meets it and reports it
            data = data[sent:]
            if not data:
                return
        super()._adapter_emit_data(data)
