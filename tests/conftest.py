"""This repository's own tests: its ``async def`` tests run on a fresh event loop each (the
polybus plugin runs only those that use its fixtures)."""

from __future__ import annotations

import inspect

import pytest

from polybus.testing.plugin import run_async_test


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    run_async_test(pyfuncitem)
    return True
