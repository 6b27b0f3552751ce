"""A bus's background event-loop thread, and the way blocking code calls into it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from polybus.core.errors import Closed

T = TypeVar("T")
CANCEL_ROUNDS = 10


class Portal:
    """Runs an event loop on its own thread; ``call`` runs a coroutine there and waits.

    A call that races ``stop()`` never waits for ever: once stopping has begun new calls raise
    ``Closed``, and a call still waiting when the loop stops (cancelled, or scheduled too late
    to run) raises ``Closed`` too, never ``concurrent.futures.CancelledError``.
    """

    def __init__(self, name: str = "polybus-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._lock = threading.Lock()
        self._waiting: set[concurrent.futures.Future[Any]] = set()
        self._stopping = False
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()

    @property
    def stopped(self) -> bool:
        """Whether ``stop()`` has begun: calls raise ``Closed`` from then on."""
        return self._stopping

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a blocking polybus call was made from the bus's own loop thread")
        with self._lock:
            if self._stopping:
                coroutine.close()
                raise Closed("the bus is closed")
            future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
            self._waiting.add(future)
        try:
            return future.result(timeout)
        except concurrent.futures.CancelledError:
            raise Closed("the bus was closed during the call") from None
        finally:
            with self._lock:
                self._waiting.discard(future)

    def stop(self) -> None:
        """Cancel what is left on the loop, stop it, and join the thread."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        if not self._thread.is_alive():
            return

        async def cancel_rest() -> None:
            # again, a task that swallowed its cancel (then got on with waiting) is cancelled
            # once more, and a task that will not end is left after CANCEL_ROUNDS seconds
            current = asyncio.current_task()
            for _ in range(CANCEL_ROUNDS):
                rest = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
                if not rest:
                    return
                for task in rest:
                    task.cancel()
                done, _ = await asyncio.wait(rest, timeout=1.0)
                for task in done:  # what they failed with was reported where it happened
                    if not task.cancelled():
                        task.exception()

        on_loop_thread = threading.current_thread() is self._thread
        if not on_loop_thread:
            asyncio.run_coroutine_threadsafe(cancel_rest(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        if not on_loop_thread:
            self._thread.join()
        with self._lock:  # calls whose coroutine never got to run on the stopped loop
            for future in self._waiting:
                future.cancel()
