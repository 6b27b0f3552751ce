"""The pytest plugin: ``--polybus-url``, the conformance fixtures, and buses for users' tests.

Installing polybus registers it, so it minds its own business: every fixture's name starts with
``polybus_``, and it runs an ``async def`` test only when the test uses one of them.

For users' unit tests: ``polybus_bus``, a blocking bus on a fresh ``memory://`` broker, and
``polybus_async_bus``, its asyncio twin (an ``async def`` test that takes it runs on a loop of
its own). For the conformance suite: ``polybus_target`` is parametrized over every transport and
API (every transport x {aio, blocking}); ``polybus_connect`` opens buses on it, closed after
the test; ``polybus_broker_control`` restarts a test-owned broker. A test states what it needs
with ``@pytest.mark.requires("priority")``; a transport without it is a skip that says why.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import polybus
from polybus.aio import AsyncBus
from polybus.core.errors import NotFound
from polybus.testing.adapter import AsyncView, in_thread
from polybus.testing.harness import (
    HARNESSES,
    BrokerHarness,
    UrlHarness,
    load_harness,
    required,
)

APIS = ("aio", "blocking")
_harness_key = pytest.StashKey[dict[str, "BrokerHarness | str"]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("polybus")
    group.addoption(
        "--polybus-url",
        action="append",
        default=[],
        help="run the conformance suite on this broker URL (repeatable); default: every "
        "built-in transport reachable here",
    )
    group.addoption(
        "--polybus-transport",
        action="append",
        default=[],
        help=f"run only these built-in transports (repeatable, or comma-separated):"
        f" {', '.join(HARNESSES)}",
    )
    group.addoption("--polybus-api", action="append", default=[], help="aio and/or blocking")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "requires(*capabilities): the transport must have these capabilities"
    )
    harnesses: dict[str, BrokerHarness | str] = {}
    for url in config.getoption("--polybus-url"):
        harness = UrlHarness(url)
        harnesses[f"{harness.name}:{len(harnesses)}"] = harness
    if not harnesses:
        given = config.getoption("--polybus-transport")
        names = [name.strip() for names in given for name in names.split(",") if name.strip()]
        if unknown := [name for name in names if name not in HARNESSES]:
            raise pytest.UsageError(
                f"--polybus-transport: no built-in transport {', '.join(unknown)};"
                f" there are: {', '.join(HARNESSES)}"
            )
        for name in names or list(HARNESSES):
            harnesses[name] = load_harness(name)
    config.stash[_harness_key] = harnesses


def pytest_unconfigure(config: pytest.Config) -> None:
    for harness in config.stash.get(_harness_key, {}).values():
        if isinstance(harness, BrokerHarness):
            harness.shutdown()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "polybus_target" not in metafunc.fixturenames:
        return
    harnesses = metafunc.config.stash[_harness_key]
    apis = metafunc.config.getoption("--polybus-api") or list(APIS)
    params = [
        (name, api)
        for name, harness in harnesses.items()
        for api in apis
        if isinstance(harness, str) or api in harness.apis
    ]
    metafunc.parametrize(
        "polybus_target", params, indirect=True, ids=[f"{n}-{a}" for n, a in params]
    )


@dataclass
class Target:
    """The transport and API one parametrized conformance test runs on."""

    name: str
    api: str
    harness: BrokerHarness
    namespace: str
    opened: list[Any] = field(default_factory=list)

    async def connect(self, url: str | None = None, **kwargs: Any) -> Any:
        url = self.harness.url(self.namespace) if url is None else url
        if self.api == "aio":
            bus: Any = await polybus.aio.connect(url, **kwargs)
        else:
            bus = AsyncView(await in_thread(polybus.connect, url, **kwargs))
        self.opened.append(bus)
        return bus

    async def on_transport(self, bus: Any, method: str, *args: Any) -> Any:
        """Call a transport primitive of a bus of either API, on the bus's own loop."""
        if isinstance(bus, AsyncView):
            blocking = bus.blocking
            primitive = getattr(blocking._core._transport, method)
            return await in_thread(blocking._portal.call, primitive(*args))
        return await getattr(bus._transport, method)(*args)

    async def crash(self, bus: Any) -> None:
        """Kill a bus's connection as a crashed process would: no acks, no goodbye."""
        await self.on_transport(bus, "abort")

    async def queue_exists(self, bus: Any, queue: str) -> bool:
        try:
            await self.on_transport(bus, "queue_size", queue)
        except NotFound:
            return False
        return True

    async def close_all(self) -> None:
        for bus in reversed(self.opened):
            await bus.close()
        self.opened.clear()


@pytest.fixture
def polybus_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The transport and API this conformance test runs on (the test is parametrized over
    every transport of ``--polybus-url``/``--polybus-transport`` and both APIs); skipped,
    saying why, where the broker or a ``requires`` capability is missing."""
    name, api = request.param
    harness = request.config.stash[_harness_key][name]
    harness = skip_unless_available(name, harness)
    _skip_missing_capabilities(request, harness)
    namespace = f"t{os.urandom(5).hex()}"
    target = Target(name, api, harness, namespace)
    yield target
    harness.cleanup(namespace)


def session_harness(config: pytest.Config, name: str) -> BrokerHarness:
    """The session's harness of a built-in transport (the conformance suite's own, so a
    test-owned cluster starts once), skipped or failed as ``skip_unless_available`` says."""
    harnesses = config.stash[_harness_key]
    if name not in harnesses:
        harnesses[name] = load_harness(name)  # shut down with the others
    return skip_unless_available(name, harnesses[name])


def skip_unless_available(name: str, harness: BrokerHarness | str) -> BrokerHarness:
    """The harness, if its broker can be used; else skip the test saying why — or fail it
    where ``POLYBUS_REQUIRE`` names the broker (CI), so an absent broker is never a pass."""
    reason = harness if isinstance(harness, str) else harness.unavailable()
    if reason:
        if name.split(":")[0] in required():
            pytest.fail(f"{name} is required here but unavailable: {reason}")
        pytest.skip(f"{name} unavailable: {reason}")
    assert isinstance(harness, BrokerHarness)
    return harness


def _skip_missing_capabilities(request: pytest.FixtureRequest, harness: BrokerHarness) -> None:
    capabilities = harness.capabilities()
    for marker in request.node.iter_markers("requires"):
        for capability in marker.args:
            if not getattr(capabilities, capability):
                why = capabilities.reason or "the transport does not declare it"
                pytest.skip(f"{harness.name} lacks {capability!r}: {why}")


@pytest.fixture
def polybus_connect(polybus_target: Target) -> Callable[..., Awaitable[Any]]:
    """``bus = await polybus_connect()``: a bus on this test's transport and API, closed after
    the test (another URL, or ``codec=``, may be given)."""
    return polybus_target.connect


@dataclass
class BrokerControl:
    """Fault injection for a test-owned broker."""

    target: Target
    url: str

    @property
    def restart_seconds(self) -> float:
        """How long a restart may take, at most."""
        return self.target.harness.restart_seconds

    async def restart(self) -> None:
        await in_thread(self.target.harness.restart)


@pytest.fixture
def polybus_broker_control(polybus_target: Target) -> BrokerControl:
    """Restarts the test-owned broker behind ``.url`` (skipped where there is none)."""
    url = polybus_target.harness.restartable_url(polybus_target.namespace)
    if url is None:
        pytest.skip(f"{polybus_target.name}: no test-owned broker to restart for this URL")
    return BrokerControl(polybus_target, url)


OWN_FIXTURES = frozenset(
    {"polybus_target", "polybus_connect", "polybus_broker_control", "polybus_async_bus"}
)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run the ``async def`` tests that use this plugin's fixtures; leave every other test to
    whatever runs it (pytest-asyncio, anyio, …)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    if OWN_FIXTURES.isdisjoint(pyfuncitem.fixturenames):
        return None
    run_async_test(pyfuncitem)
    return True


def run_async_test(pyfuncitem: pytest.Function) -> None:
    """Run an ``async def`` test on a fresh event loop; the buses it opened through
    ``polybus_target`` and ``polybus_async_bus`` are closed inside that loop."""
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    target = pyfuncitem.funcargs.get("polybus_target")
    async_bus = pyfuncitem.funcargs.get("polybus_async_bus")

    async def run() -> None:
        try:
            if isinstance(async_bus, _AsyncBusFactory):
                kwargs["polybus_async_bus"] = await async_bus.open()
            await pyfuncitem.obj(**kwargs)
        finally:
            if isinstance(target, Target):
                await target.close_all()
            if isinstance(async_bus, _AsyncBusFactory):
                await async_bus.close()

    asyncio.run(run())


@pytest.fixture
def polybus_bus() -> Iterator[polybus.Bus]:
    """A blocking bus on a fresh in-process ``memory://`` broker, for users' unit tests."""
    with polybus.connect(f"memory://pytest-{os.urandom(6).hex()}") as test_bus:
        yield test_bus


class _AsyncBusFactory:
    """What ``polybus_async_bus`` holds until its test's loop runs: the bus is opened there."""

    def __init__(self) -> None:
        self.bus: AsyncBus | None = None

    async def open(self) -> AsyncBus:
        self.bus = await polybus.aio.connect(f"memory://pytest-{os.urandom(6).hex()}")
        return self.bus

    async def close(self) -> None:
        if self.bus is not None:
            await self.bus.close()


@pytest.fixture
def polybus_async_bus() -> _AsyncBusFactory:
    """An asyncio bus on a fresh in-process ``memory://`` broker, for users' ``async def``
    tests (the test gets the connected ``AsyncBus``; it is closed after the test)."""
    return _AsyncBusFactory()


__all__ = ["AsyncBus", "BrokerControl", "Target"]
