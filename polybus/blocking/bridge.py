"""The one way a blocking class is made from an asyncio one.

A blocking object stands for an asyncio object of the core (``_core``) and calls into the bus's
loop thread through its ``Portal`` (``_portal``). Its methods are not written out: each is a
descriptor built from the asyncio method it stands for —

    class WorkQueue(Blocking[aio.WorkQueue]):
        send = waits(aio.WorkQueue.send)               # coroutine -> a call that waits for it
        name = mirrors[str]("name")                    # property -> the same property

— which keeps the asyncio method's parameters (``ParamSpec``: mypy and IDEs see them), its name
and its docstring, and runs the coroutine on the loop thread. ``waits(..., into=Wrapper)`` wraps
what the coroutine returns in its blocking twin; ``builds`` does the same for a plain method that
returns an asyncio object (``bus.work_queue``). Only what truly differs between the APIs is
written by hand: iterating a subscription, acking from any thread, the bus's lifecycle.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from polybus.blocking.portal import Portal

P = ParamSpec("P")
R = TypeVar("R")
W = TypeVar("W")
Core = TypeVar("Core")


class Blocking(Generic[Core]):
    """A blocking object: the asyncio object it stands for, and the portal to its loop."""

    def __init__(self, portal: Portal, core: Core) -> None:
        self._portal = portal
        self._core = core


class _Bridged(Generic[P, R]):
    """What ``waits`` and ``builds`` share: the method they stand for, shown as it is."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self._method = method
        functools.update_wrapper(self, method)  # its name and docstring
        signature = inspect.signature(method)
        self.__signature__ = signature  # on the class: as the unbound method's, self first
        self._bound_signature = signature.replace(
            parameters=list(signature.parameters.values())[1:]
        )

    def _bind(self, instance: Blocking[Any]) -> Callable[P, R]:
        raise NotImplementedError

    @overload
    def __get__(self, instance: None, owner: type) -> _Bridged[P, R]: ...

    @overload
    def __get__(self, instance: Blocking[Any], owner: type) -> Callable[P, R]: ...

    def __get__(
        self, instance: Blocking[Any] | None, owner: type
    ) -> _Bridged[P, R] | Callable[P, R]:
        if instance is None:
            return self
        bound = self._bind(instance)
        functools.update_wrapper(bound, self._method)
        bound.__signature__ = self._bound_signature  # type: ignore[attr-defined]
        return bound

    def __call__(self, instance: Blocking[Any], *args: Any, **kwargs: Any) -> R:
        """Called on the class, as an unbound method is: ``WorkQueue.send(q, body)``."""
        return self._bind(instance)(*args, **kwargs)


class waits(_Bridged[P, R]):  # noqa: N801 - used like a decorator
    """An asyncio method, as a method that runs it on the loop thread and waits for it."""

    def __init__(self, method: Callable[Concatenate[Any, P], Awaitable[R]]) -> None:
        super().__init__(method)

    def _bind(self, instance: Blocking[Any]) -> Callable[P, R]:
        method, core, portal = self._method, instance._core, instance._portal

        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            result: R = portal.call(method(core, *args, **kwargs))
            return result

        return call


class waits_into(_Bridged[P, W]):  # noqa: N801
    """``waits``, wrapping the asyncio object the method returns in its blocking twin."""

    def __init__(
        self,
        method: Callable[Concatenate[Any, P], Awaitable[R]],
        into: Callable[[Portal, R], W],
    ) -> None:
        super().__init__(method)
        self._into = into

    def _bind(self, instance: Blocking[Any]) -> Callable[P, W]:
        method, core, portal, into = self._method, instance._core, instance._portal, self._into

        def call(*args: P.args, **kwargs: P.kwargs) -> W:
            return into(portal, portal.call(method(core, *args, **kwargs)))

        return call


class builds(_Bridged[P, W]):  # noqa: N801
    """A plain asyncio method that returns an asyncio object (``bus.work_queue``), returning
    its blocking twin instead; it does no I/O, so it runs on the caller's thread."""

    def __init__(
        self, method: Callable[Concatenate[Any, P], R], into: Callable[[Portal, R], W]
    ) -> None:
        super().__init__(method)
        self._into = into

    def _bind(self, instance: Blocking[Any]) -> Callable[P, W]:
        method, core, portal, into = self._method, instance._core, instance._portal, self._into

        def call(*args: P.args, **kwargs: P.kwargs) -> W:
            return into(portal, method(core, *args, **kwargs))

        return call


class mirrors(Generic[R]):  # noqa: N801
    """A property of the asyncio object, read through: ``name = mirrors[str]("name")``."""

    def __init__(self, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, instance: None, owner: type) -> mirrors[R]: ...

    @overload
    def __get__(self, instance: Blocking[Any], owner: type) -> R: ...

    def __get__(self, instance: Blocking[Any] | None, owner: type) -> mirrors[R] | R:
        if instance is None:
            return self
        value: R = getattr(instance._core, self._name)
        return value
