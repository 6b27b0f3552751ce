"""Bounds on the calls a bus makes to its transport: none may wait longer than its deadline.

A broker that accepts connections but never answers, a connection stalled in a proxy, a confirm
that never comes: each would leave a caller waiting for ever. Every transport call the patterns
make goes through ``Deadlines.bounded``, which cancels it once ``timeout`` seconds have passed and
raises the caller's error instead, saying the outcome is unknown. ``close()`` ends every call
still in flight the same way, with ``Closed``.

One timer serves all the calls in flight (a timer per call would cost a send more than the rest
of polybus does), so a call may run up to a tick (a quarter of the timeout, a second at most)
past its deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from polybus.core.errors import Closed, PolybusError

T = TypeVar("T")
MAX_TICK = 1.0
OURS = "polybus: past its deadline, or its bus closed"
"""The message of the cancels ``Deadlines`` makes, to tell them from anyone else's."""

OnTimeout = Callable[[float, Any], PolybusError]
"""Builds the error of a call past its deadline from the timeout and the call's context (built
only then: describing every call up front would cost more than bounding it)."""


class _Call:
    __slots__ = ("context", "deadline", "ended_by", "on_timeout", "task")

    def __init__(
        self, task: asyncio.Task[Any], deadline: float, on_timeout: OnTimeout, context: Any
    ) -> None:
        self.task = task
        self.deadline = deadline
        self.on_timeout = on_timeout
        self.context = context
        self.ended_by: PolybusError | None = None  # set when it is cancelled from here


class Deadlines:
    """The calls in flight on one event loop, each with the time it must end by."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._tick = min(MAX_TICK, timeout / 4)
        self._calls: dict[int, _Call] = {}  # in the order they started, so by deadline
        self._timer: asyncio.TimerHandle | None = None
        self._ids = 0

    async def bounded(self, call: Awaitable[T], on_timeout: OnTimeout, context: Any) -> T:
        """Await ``call``; past the deadline, cancel it and raise
        ``on_timeout(timeout, context)``."""
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing to cancel, so no bound (never in polybus)
            return await call
        loop = asyncio.get_running_loop()
        self._ids += 1
        key = self._ids
        entry = self._calls[key] = _Call(task, loop.time() + self.timeout, on_timeout, context)
        if self._timer is None:
            self._timer = loop.call_later(self._tick, self._check)
        try:
            return await call
        except asyncio.CancelledError as cancel:
            if entry.ended_by is None or _cancelled_by_another(task, cancel):
                raise
            raise entry.ended_by from None
        finally:
            del self._calls[key]

    def _check(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        for entry in self._calls.values():
            if entry.deadline > now:
                break
            if entry.ended_by is None:
                entry.ended_by = entry.on_timeout(self.timeout, entry.context)
                entry.task.cancel(OURS)
        if self._calls:
            self._timer = asyncio.get_running_loop().call_later(self._tick, self._check)

    def end_all(self, reason: str) -> None:
        """Make every call in flight (but the current task's) raise ``Closed(reason)``."""
        current = asyncio.current_task()
        for entry in self._calls.values():
            if entry.ended_by is None and entry.task is not current:
                entry.ended_by = Closed(reason)
                entry.task.cancel(OURS)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _cancelled_by_another(task: asyncio.Task[Any], cancel: asyncio.CancelledError) -> bool:
    """Whether someone else cancelled the task too (a bus shutting down everything, say): then
    the cancel must go on, not turn into this call's error. Python 3.11 counts a task's cancel
    requests; before, the message of the cancel that arrived tells whose it was."""
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        return bool(uncancel() > 0)
    return cancel.args[:1] != (OURS,)
