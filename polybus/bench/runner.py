"""Running the plan: every broker, every client on it, every case and size, with progress."""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import polybus
from polybus.aio import AsyncBus
from polybus.bench import baselines, workloads
from polybus.bench.model import (
    PATTERNS,
    Measurement,
    Plan,
    Result,
    Suite,
    Unreachable,
    display_url,
    new_namespace,
    with_namespace,
)
from polybus.core.errors import PolybusError

DEFAULT_URLS = (
    "memory://",
    "fakeredis://",
    "redis://127.0.0.1:6379",
    "amqp://guest:guest@127.0.0.1:5672/",
    "nats://127.0.0.1:4222",
)
# broker scheme -> share of --messages it runs: fakeredis is a Python emulation of Redis that
# moves a few hundred messages per second; at full counts it alone would take minutes
SCALE = {"fakeredis": 0.1}
UNREACHABLE = "not known (unreachable)"
# broker scheme -> the raw client whose msgs/s the "vs raw" ratio divides by
RAW_CLIENT = {"redis": "redis-py", "rediss": "redis-py", "amqp": "pika", "amqps": "pika"}


class PolybusSuite:
    """polybus's asyncio API: one bus for the clients, a second connection for RPC servers."""

    client = "polybus"
    raw = False
    patterns = frozenset(PATTERNS)

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop: asyncio.AbstractEventLoop | None = None
        self.bus: AsyncBus | None = None
        self.server_bus: AsyncBus | None = None

    def open(self) -> None:
        self.loop = loop = asyncio.new_event_loop()
        try:
            self.bus = loop.run_until_complete(self._connect())
            self.server_bus = loop.run_until_complete(self._connect())
        except PolybusError as exc:
            self.close()
            raise Unreachable(str(exc)) from exc

    async def _connect(self) -> AsyncBus:
        return await polybus.aio.connect(self.url)

    def run(self, pattern: str, size: int, plan: Plan) -> list[Measurement]:
        loop, bus, server_bus = self.loop, self.bus, self.server_bus
        assert loop and bus and server_bus, "run() before open()"
        if pattern == "rpc":
            return loop.run_until_complete(workloads.rpc(bus, server_bus, size, plan))
        return loop.run_until_complete(ASYNC_WORKLOADS[pattern](bus, size, plan))

    def close(self) -> None:
        loop = self.loop
        if loop is None:
            return
        for bus in (self.bus, self.server_bus):
            if bus is not None:
                loop.run_until_complete(bus.close())
        self.bus = self.server_bus = self.loop = None
        # as asyncio.run does: whatever a transport left running is cancelled, not abandoned
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        loop.run_until_complete(_settle(left))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _settle(tasks: set[asyncio.Task[Any]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


ASYNC_WORKLOADS = {
    "delay": workloads.delay,
    "workqueue": workloads.workqueue,
    "latency": workloads.latency,
    "fanout": workloads.fanout,
}


class BlockingSuite:
    """polybus's blocking API, on the work queue and RPC: the figures that tell what the
    loop-thread hop costs beside the asyncio API."""

    client = "polybus-blocking"
    raw = False
    patterns = frozenset({"workqueue", "rpc"})

    def __init__(self, url: str) -> None:
        self.url = url
        self.bus: polybus.Bus | None = None
        self.server_bus: polybus.Bus | None = None

    def open(self) -> None:
        try:
            self.bus = polybus.connect(self.url)
            self.server_bus = polybus.connect(self.url)
        except PolybusError as exc:
            self.close()
            raise Unreachable(str(exc)) from exc

    def run(self, pattern: str, size: int, plan: Plan) -> list[Measurement]:
        assert self.bus is not None and self.server_bus is not None, "run() before open()"
        if pattern == "rpc":
            return workloads.blocking_rpc(self.bus, self.server_bus, size, plan)
        return workloads.blocking_workqueue(self.bus, size, plan)

    def close(self) -> None:
        for bus in (self.bus, self.server_bus):
            if bus is not None:
                bus.close()


@dataclass
class Broker:
    url: str  # as shown: no password, no query
    durability: str
    messages: int  # work-queue messages per case here (the other cases scale from it)
    scheme: str = field(repr=False)
    raw_url: str = field(repr=False)  # may hold a password: never shown or written
    clients: dict[str, str] = field(default_factory=dict)  # client -> "ok" or why not


@dataclass
class Report:
    plan: Plan
    machine: dict[str, Any]
    brokers: list[Broker] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(result.status == "error" for result in self.results)


def machine_info() -> dict[str, Any]:
    """What the numbers depend on, for the header."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in cpuinfo
                    if line.startswith("model name")
                ),
                cpu,
            )
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "polybus": polybus.__version__,
        "load": [round(load, 2) for load in os.getloadavg()],  # others' work skews the figures
    }


def suites(url: str, namespace: str, baseline: bool) -> Iterator[Suite]:
    scheme = urlsplit(url).scheme.lower()
    yield PolybusSuite(url)
    yield BlockingSuite(url)
    if baseline:
        yield from baselines.suites_for(scheme, url, namespace)


Progress = Callable[[str, int], None]  # (what is running now, cases it finished)


def count_steps(plan: Plan, urls: list[str], baseline: bool) -> int:
    """Steps the progress bar counts: one per (broker, client, pattern, size), measured or not."""
    namespace = "count"
    return sum(
        len(plan.sizes) * len([p for p in plan.patterns if p in suite.patterns])
        for url in urls
        for suite in suites(with_namespace(url, namespace), namespace, baseline)
    )


def run(plan: Plan, urls: list[str], baseline: bool, progress: Progress) -> Report:
    report = Report(plan, machine_info())
    for url in urls:
        namespace = new_namespace()
        scheme = urlsplit(url).scheme.lower()
        shown = display_url(url)
        here = replace(plan, messages=max(1, int(plan.messages * SCALE.get(scheme, 1.0))))
        broker = Broker(shown, UNREACHABLE, here.messages, scheme, url)
        report.brokers.append(broker)
        for suite in suites(with_namespace(url, namespace), namespace, baseline):
            patterns = [p for p in plan.patterns if p in suite.patterns]
            left = [p for p in plan.patterns if p not in suite.patterns]
            if left:
                report.notes.append(
                    f"{shown} {suite.client}: measures {', '.join(sorted(suite.patterns))} only; "
                    f"{', '.join(left)} not implemented for this client"
                )
            if patterns:
                _run_suite(suite, patterns, here, broker, report, progress)
        if baseline and not baselines.suites_for(scheme, url, namespace):
            report.notes.append(f"{shown}: no raw client to compare with (--baseline)")
    _ratios(report.results)
    return report


def _run_suite(
    suite: Suite,
    patterns: list[str],
    plan: Plan,
    broker: Broker,
    report: Report,
    progress: Progress,
) -> None:
    shown = broker.url
    steps = len(patterns) * len(plan.sizes)
    progress(f"{shown} {suite.client}: connecting", 0)
    try:
        suite.open()
    except Exception as exc:  # Unreachable, or a transport's bug: a line either way, not a crash
        status = "unreachable" if isinstance(exc, Unreachable) else "error"
        detail = str(exc) if isinstance(exc, Unreachable) else f"{type(exc).__name__}: {exc}"
        broker.clients[suite.client] = f"{status}: {detail}"
        report.results.append(Result(shown, suite.client, "*", None, status, detail))
        progress(f"{shown} {suite.client}: {status}", steps)
        return
    broker.clients[suite.client] = "ok"
    if broker.durability == UNREACHABLE:  # asked once, of a broker that answers
        broker.durability = baselines.durability(broker.scheme, broker.raw_url)
    try:
        for pattern in patterns:
            for size in plan.sizes:
                progress(f"{shown} {suite.client}: {pattern} {size} B", 0)
                report.results.extend(_measure(suite, shown, pattern, size, plan))
                progress(f"{shown} {suite.client}: {pattern} {size} B", 1)
    finally:
        suite.close()


def _measure(suite: Suite, broker: str, pattern: str, size: int, plan: Plan) -> list[Result]:
    """The pattern's cases at one size, each the best of ``plan.repeat`` runs."""
    try:
        best: dict[str, Measurement] = {}
        for _ in range(plan.repeat):
            for measured in suite.run(pattern, size, plan):
                kept = best.get(measured.case)
                if kept is None or measured.seconds / measured.count < kept.seconds / kept.count:
                    best[measured.case] = measured
        return [Result.measured(broker, suite.client, size, m) for m in best.values()]
    except Exception as exc:  # a broken case is a row that says why; the run goes on
        return [
            Result(broker, suite.client, case, size, "error", f"{type(exc).__name__}: {exc}")
            for case in PATTERNS[pattern]
        ]


def _ratios(results: list[Result]) -> None:
    """Fill ``vs_raw``: each client's msgs/s over the raw client's, same broker, case, size."""
    raw = {
        (r.broker, r.case, r.size): r.msgs_per_s
        for r in results
        if r.status == "ok" and r.client == RAW_CLIENT.get(urlsplit(r.broker).scheme)
    }
    for result in results:
        base = raw.get((result.broker, result.case, result.size))
        if base and result.msgs_per_s is not None:
            result.vs_raw = result.msgs_per_s / base
