"""The one shape of ``worker`` and ``handler`` in both APIs: call it with a handler, or use it
as a decorator (``@q.worker(prefetch=1)``, ``@rpc.handler``), which starts the worker and
returns the function unchanged.

The asyncio API cannot wait inside a decorator, so there the worker starts as a task of the
bus: ``await bus.run()`` waits for it (and raises what it raised); the blocking API starts it
before the decorator returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

Handler = TypeVar("Handler", bound=Callable[..., Any])
Started = TypeVar("Started")


def handler_or_decorator(
    handler: Callable[..., Any] | None,
    start: Callable[[Callable[..., Any]], Started],
    start_from_decorator: Callable[[Callable[..., Any]], object],
) -> Started | Callable[[Handler], Handler]:
    """``start(handler)`` when given a handler; else a decorator that starts the function it
    decorates with ``start_from_decorator`` and returns it unchanged."""
    if handler is not None:
        return start(handler)

    def decorate(function: Handler) -> Handler:
        start_from_decorator(function)
        return function

    return decorate
