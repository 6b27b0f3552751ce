"""pika's asyncio connection, writing once per loop iteration instead of once per frame.

pika hands every frame to the socket with its own ``send`` call: three per published message
(method, header, body) and one per ack, which profiling showed to be a quarter of the CPU time
of a publishing or consuming bus. Here the frames written during one loop iteration are joined and
handed to pika's transport together, at the end of that iteration — the order of frames on the
wire is unchanged, and nothing waits longer than the current iteration.
"""

from __future__ import annotations

import asyncio

from pika.adapters.asyncio_connection import AsyncioConnection


class CoalescingConnection(AsyncioConnection):  # type: ignore[misc]  # pika is untyped
    """An ``AsyncioConnection`` whose writes within one loop iteration become one."""

    _chunks: list[bytes] | None = None

    def _adapter_emit_data(self, data: bytes) -> None:
        chunks = self._chunks
        if chunks is None:
            chunks = self._chunks = []
            asyncio.get_running_loop().call_soon(self._flush)
        chunks.append(data)

    def _flush(self) -> None:
        chunks, self._chunks = self._chunks, None
        if chunks and self._transport is not None:
            super()._adapter_emit_data(b"".join(chunks))
