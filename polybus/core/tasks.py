"""Waiting for a task to end without swallowing a cancellation meant for the waiter.

``task.cancel(); with suppress(CancelledError): await task`` also swallows the waiter's own
cancel, should it come while it waits: a close that was itself being cancelled (a bus
shutting down, a time bound) would go on as if nothing happened. ``asyncio.wait`` returns when
the task ends, whatever it ends with, and raises only the waiter's own ``CancelledError``.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def finished(task: asyncio.Future[Any] | None) -> None:
    """Wait for ``task`` to end (by any outcome); its exception is read, not raised."""
    if task is None:
        return
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()


async def cancelled(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` and wait for it to end."""
    if task is not None:
        task.cancel()
        await finished(task)
