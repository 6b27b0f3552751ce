"""Handler-based consumption: a worker runs a handler per message and settles it.

One implementation serves both APIs: coroutine handlers are awaited on the loop, plain functions
run on the worker's own threads (``concurrency`` of them), so a blocking handler never stalls the
loop. What happens after the handler is the caller's ``process`` function: ack on return for work
queues, a reply for RPC. ``process`` says how each message ended, and the worker counts it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from polybus.core.deadletters import UNDECODABLE, Outcome, dead_letter
from polybus.core.errors import Closed, PolybusError, SerializationError
from polybus.core.inbox import Inbox
from polybus.core.subscription import ConsumeSpec, QueueConsumer
from polybus.core.transport import Delivery

if TYPE_CHECKING:
    from polybus.core.bus import AsyncBus

log = logging.getLogger("polybus")

Process = Callable[[Delivery], Awaitable[Outcome]]


class HandlerUnavailable(Closed):
    """The handler could not be called (its threads are gone: the program is exiting without
    closing the bus). Nothing was handled, so the message is neither retried nor
    dead-lettered: it stays unacked, for the broker to deliver again."""


class HandlerRunner:
    """Calls a user handler the right way for its kind: ``await runner.call(argument)`` awaits
    a coroutine function itself (no wrapper on the per-message path) and runs a plain function
    on the runner's threads."""

    def __init__(self, handler: Callable[..., Any], concurrency: int, name: str) -> None:
        self.handler = handler
        self.is_async = inspect.iscoroutinefunction(handler)
        self.call: Callable[[Any], Awaitable[Any]]
        if self.is_async:
            self._pool = None
            self.call = handler
        else:
            prefix = f"polybus-{name}"
            self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=prefix)
            self.call = self._in_thread

    async def _in_thread(self, argument: Any) -> Any:
        try:
            running = asyncio.get_running_loop().run_in_executor(self._pool, self.handler, argument)
        except RuntimeError as exc:  # no new threads: the pool or the interpreter shut down
            raise HandlerUnavailable(f"the handler could not be run: {exc}") from None
        return await running

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class Worker:
    """Consumes a queue and runs ``process`` on each delivery, ``concurrency`` at a time.

    Counts, as a user reads them: ``acked`` messages done (the handler returned), ``retried``
    messages sent again for another attempt, ``dead_lettered`` messages that gave up (moved to
    the dead-letter queue, or dropped where there is none), and ``errors``, messages polybus
    could not settle (the broker will deliver them again). Closing stops new deliveries, lets
    the running handlers finish, and returns buffered, unstarted deliveries to the queue.
    """

    def __init__(
        self,
        bus: AsyncBus,
        spec: ConsumeSpec,
        process: Process,
        *,
        concurrency: int,
        runner: HandlerRunner,
    ) -> None:
        self._bus = bus
        self._inbox = Inbox()
        self._consumer = QueueConsumer(bus, spec, self._inbox.put)
        self._process = process
        self._runner = runner
        self._concurrency = concurrency
        self._tasks: list[asyncio.Task[None]] = []
        self._counts = {"acked": 0, "retried": 0, "dead_lettered": 0, "errors": 0}

    @property
    def queue(self) -> str:
        """The queue this worker consumes (server-side name, namespace included)."""
        return self._consumer.queue

    @property
    def acked(self) -> int:
        """Messages done: the handler returned."""
        return self._counts["acked"]

    @property
    def retried(self) -> int:
        """Messages sent again for another attempt after the handler raised."""
        return self._counts["retried"]

    @property
    def dead_lettered(self) -> int:
        """Messages given up on: moved to the dead-letter queue, or dropped without one."""
        return self._counts["dead_lettered"]

    @property
    def errors(self) -> int:
        """Messages polybus could not settle (the broker delivers them again)."""
        return self._counts["errors"]

    async def _start(self) -> Worker:
        await self._consumer.start()
        self._tasks = [asyncio.ensure_future(self._run()) for _ in range(self._concurrency)]
        self._bus._track(self, self.close)
        return self

    async def _run(self) -> None:
        while True:
            delivery = await self._inbox.get()
            if delivery is None:
                return
            try:
                outcome = await self._process(delivery)
            except PolybusError as exc:
                self._counts["errors"] += 1
                log.error("worker on %s could not finish a message: %s", self.queue, exc)
                continue
            except Exception:
                self._counts["errors"] += 1
                log.exception("worker on %s failed on a message", self.queue)
                continue
            self._counts[outcome] += 1

    async def close(self) -> None:
        """Graceful stop: no new deliveries, running handlers finish, the rest go back."""
        if self._consumer.closed:
            return
        await self._consumer.stop_consuming()
        unstarted = self._inbox.drain()
        self._inbox.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._consumer.close(unstarted)
        await asyncio.get_running_loop().run_in_executor(None, self._runner.shutdown)
        self._bus._untrack(self)


OnFailure = Callable[[Delivery, Exception], Awaitable[Outcome]]


async def start_handler_worker(
    bus: AsyncBus,
    spec: ConsumeSpec,
    handler: Callable[..., Any],
    *,
    concurrency: int,
    on_failure: OnFailure,
) -> Worker:
    """A worker that calls ``handler(message)``: ack on return (unless the spec auto-acks),
    ``on_failure`` when the handler raises. A message whose body cannot be decoded is
    dead-lettered without calling the handler: no retry would decode it."""
    runner = HandlerRunner(handler, concurrency, spec.queue)
    call, broker = runner.call, bus._broker

    async def process(delivery: Delivery) -> Outcome:
        message = bus._message(delivery)
        try:
            message.body  # noqa: B018 - decoded now (and kept) to know it can be
        except SerializationError as exc:
            return await dead_letter(bus, spec, delivery, UNDECODABLE, detail=str(exc))
        try:
            await call(message)
        except HandlerUnavailable:
            raise
        except Exception as exc:
            return await on_failure(delivery, exc)
        if not spec.auto_ack:
            await broker.ack(delivery)
        return "acked"

    return await Worker(bus, spec, process, concurrency=concurrency, runner=runner)._start()
