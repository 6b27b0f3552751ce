"""This repository's own tests: its ``async def`` tests run on a fresh event loop each (the
polybus plugin runs only those that use its fixtures); ``harness`` gives tests outside the
conformance suite a transport's harness."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator

import pytest

from polybus.testing.harness import BrokerHarness, load_harness
from polybus.testing.plugin import run_async_test, skip_unless_available


@pytest.fixture(scope="module")
def harness() -> Iterator[Callable[[str], BrokerHarness]]:
    """``harness(name)``: the transport's harness, loaded once per module (its test-owned
    brokers stopped at the module's end); a skip saying why where it is unavailable, a failure
    where ``POLYBUS_REQUIRE`` names it."""
    loaded: dict[str, BrokerHarness | str] = {}

    def get(name: str) -> BrokerHarness:
        if name not in loaded:
            loaded[name] = load_harness(name)
        return skip_unless_available(name, loaded[name])

    yield get
    for harness in loaded.values():
        if isinstance(harness, BrokerHarness):
            harness.shutdown()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    run_async_test(pyfuncitem)
    return True
