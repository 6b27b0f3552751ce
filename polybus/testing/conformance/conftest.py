"""Short names, within the conformance suite only, for the plugin's ``polybus_`` fixtures:
the suite's tests read as stories (``bus = await connect()``), and nobody else's tests see
these names."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from polybus.testing.plugin import BrokerControl, Target


@pytest.fixture
def target(polybus_target: Target) -> Target:
    """The transport and API this test runs on."""
    return polybus_target


@pytest.fixture
def connect(polybus_connect: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``bus = await connect()``: a bus on this test's transport and API."""
    return polybus_connect


@pytest.fixture
def broker_control(polybus_broker_control: BrokerControl) -> BrokerControl:
    """Restarts the test-owned broker behind ``broker_control.url``."""
    return polybus_broker_control
