"""Lets one async test body drive the blocking API: every blocking call runs on a thread.

The conformance suite is written once, against the asyncio API's shape. For the blocking API it
wraps ``polybus.connect()``'s objects in ``AsyncView``: methods that the asyncio API awaits run in
a worker thread (so the blocking code really blocks, and many calls can block at once); methods
that the asyncio API calls plainly (``bus.work_queue``, ``q.consume``) are called plainly.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from polybus.core.errors import Closed

# names the asyncio API calls without await: they build objects, they do no I/O
PLAIN = frozenset({"work_queue", "pubsub", "router", "rpc", "consume", "subscribe"})
_threads = ThreadPoolExecutor(max_workers=256, thread_name_prefix="polybus-test")


async def in_thread(function: Any, *args: Any, **kwargs: Any) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_threads, functools.partial(function, *args, **kwargs))


def _wrap(value: Any) -> Any:
    module = type(value).__module__
    if module.startswith("polybus.") and not isinstance(value, BaseException):
        return AsyncView(value)
    return value


class AsyncView:
    """An awaitable face on a blocking polybus object."""

    def __init__(self, target: Any) -> None:
        self._target = target

    @property
    def blocking(self) -> Any:
        """The wrapped blocking object."""
        return self._target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return _wrap(attr)
        if name in PLAIN:
            return lambda *a, **kw: _wrap(attr(*a, **kw))

        async def call(*args: Any, **kwargs: Any) -> Any:
            return _wrap(await in_thread(attr, *args, **kwargs))

        return call

    async def __aenter__(self) -> AsyncView:
        await in_thread(self._target.__enter__)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await in_thread(self._target.__exit__, *exc_info)

    def __aiter__(self) -> AsyncView:
        return self

    async def __anext__(self) -> Any:
        try:
            return _wrap(await in_thread(self._target.receive))
        except Closed:
            raise StopAsyncIteration from None
