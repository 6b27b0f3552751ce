"""A local TCP proxy that can stall or cut its connections, for the stalled-connection tests.

``with StallProxy("127.0.0.1", broker_port) as proxy:`` listens on ``127.0.0.1:proxy.port`` and
forwards every connection to the broker, both ways, on an event loop of its own thread (so a test
may block in a blocking polybus call while the proxy runs). Its controls are called from any
thread and take effect before they return:

- ``stall()``: keep every socket open but forward nothing more, in either direction (a new
  connection is accepted and connected upstream, then stalled too) — a network that hangs;
- ``resume()``: forward again, including what was read before the stall;
- ``cut()``: close every connection at once (both sides see a reset); new ones are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from types import TracebackType
from typing import Any

CONTROL_TIMEOUT = 10.0


class StallProxy:
    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self.accepted = 0  # connections accepted, in all
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="stall-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._stopping = False

    # -- controls, from any thread -------------------------------------------------------------

    def start(self) -> StallProxy:
        self._thread.start()
        self._control(self._start())
        return self

    def stall(self) -> None:
        self._control(self._set_flowing(False))

    def resume(self) -> None:
        self._control(self._set_flowing(True))

    def cut(self) -> None:
        self._control(self._cut())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._control(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CONTROL_TIMEOUT)

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._writers) // 2

    def __enter__(self) -> StallProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- on the proxy's loop -------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def _control(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(CONTROL_TIMEOUT)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _cut(self) -> None:
        for writer in list(self._writers):
            _abort(writer)
        # A stalled pipe would not notice its socket closing, and a handler still connecting
        # upstream has no pipes yet (it would start them, stalled, after this): end the
        # handlers themselves, which end their pipes.
        handlers = list(self._handlers)
        for handler in handlers:
            handler.cancel()
        # every connection of before is gone on return
        if handlers:
            await asyncio.wait(handlers, timeout=CONTROL_TIMEOUT / 2)

    async def _stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        await self._cut()
        if self._server is not None:
            await self._server.wait_closed()
        # a connection accepted just before the close starts its handler a few steps later
        for _ in range(10):
            await asyncio.sleep(0)
        await self._cut()

    async def _accept(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        self.accepted += 1
        if self._stopping:
            _abort(client)
            return
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            await self._forward(client_reader, client)
        finally:
            self._handlers.discard(handler)

    async def _forward(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        self._writers.add(client)
        try:
            broker_reader, broker = await asyncio.open_connection(*self.upstream)
        except OSError:
            self._writers.discard(client)
            _abort(client)
            return
        self._writers.add(broker)
        for sock in (client.get_extra_info("socket"), broker.get_extra_info("socket")):
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipes = [
            asyncio.ensure_future(self._pipe(client_reader, broker)),
            asyncio.ensure_future(self._pipe(broker_reader, client)),
        ]
        try:
            # one direction ending (EOF, reset, cut) ends the connection
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for writer in (client, broker):
                self._writers.discard(writer)
                _abort(writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                await self._flowing.wait()  # stalled: read nothing more (the kernel buffers)
                data = await reader.read(65536)
                if not data:
                    return
                await self._flowing.wait()  # stalled after reading: hold it until resumed
                writer.write(data)
                await writer.drain()


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()
