"""A connection that stalls (a proxy stops forwarding, both sockets stay open): every call ends
within ``operation_timeout`` (and a tick), with the error that says what is known; once the
connection flows again — resumed, or cut and re-established — sending, receiving on the
subscription opened before the stall, and RPC work again; and ``close()`` is bounded even on a
stalled connection. The same body runs on the asyncio and the blocking API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import pytest
from proxy import StallProxy

import polybus
import polybus.aio
from polybus import (
    ConnectionFailed,
    PolybusError,
    PublishFailed,
    ReceiveTimeout,
    RpcTimeout,
)
from polybus.testing.adapter import AsyncView, in_thread

OPERATION_TIMEOUT = 2
BOUND = OPERATION_TIMEOUT + 2.0  # what any call may take on a stalled connection
RECOVERY_TIMEOUT = 20.0
HANG = BOUND + 15.0  # past this a call is reported as hung (the test does not wait for ever)


async def open_bus(api: str, url: str) -> Any:
    if api == "aio":
        return await polybus.aio.connect(url)
    return AsyncView(await in_thread(polybus.connect, url))


async def outcome(call: Awaitable[Any]) -> tuple[float, str, BaseException | None]:
    """How long ``call`` took and how it ended: ``returned``, the error's name, or ``hung``."""
    started = time.monotonic()
    task = asyncio.ensure_future(call)
    # asyncio.wait, not wait_for: RpcTimeout is a TimeoutError, and must not read as a hang
    done, _ = await asyncio.wait({task}, timeout=HANG)
    spent = time.monotonic() - started
    if not done:
        task.cancel()
        return spent, "hung", None
    exc = task.exception()
    if exc is None:
        return spent, "returned", None
    if isinstance(exc, PolybusError):
        return spent, type(exc).__name__, exc
    return spent, f"foreign {type(exc).__module__}.{type(exc).__name__}", exc


async def round_trip(queue: Any, sub: Any, rpc: Any, marker: str) -> dict[str, float]:
    """Retry a send until one is confirmed, then receive it on ``sub``, then get an RPC reply;
    the seconds each took from the start (failures retried until RECOVERY_TIMEOUT)."""
    started = time.monotonic()
    deadline = started + RECOVERY_TIMEOUT
    times: dict[str, float] = {}
    while True:
        spent, how, exc = await outcome(queue.send(marker))
        if how == "returned":
            times["send"] = round(time.monotonic() - started, 2)
            break
        assert isinstance(exc, (PublishFailed, ConnectionFailed)), (how, exc)
        assert spent <= BOUND, f"a send took {spent:.1f}s ({how})"
        assert time.monotonic() < deadline, f"no send confirmed within {RECOVERY_TIMEOUT}s"
        await asyncio.sleep(0.2)
    while True:  # what was sent during the stall may arrive too: skipped
        remaining = deadline - time.monotonic()
        try:
            msg = await sub.receive(timeout=max(remaining, 0.1))
        except ReceiveTimeout:
            raise AssertionError(
                f"{marker!r} confirmed, but not received by the deadline"
            ) from None
        await msg.ack()
        if msg.body == marker:
            times["receive"] = round(time.monotonic() - started, 2)
            break
    while True:
        spent, how, exc = await outcome(rpc.call(3, timeout=2))
        if how == "returned":
            times["call"] = round(time.monotonic() - started, 2)
            return times
        assert isinstance(exc, (RpcTimeout, PublishFailed, ConnectionFailed)), (how, exc)
        assert time.monotonic() < deadline, (
            f"{marker}: sending and receiving work again ({times}), but no RPC reply came "
            f"within {RECOVERY_TIMEOUT}s; the last call: {how}: {exc}"
        )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("api", ["aio", "blocking"])
async def test_calls_on_a_stalled_connection_end_in_bounded_time_and_the_bus_recovers(broker, api):
    stalled: dict[str, tuple[float, str, BaseException | None]] = {}
    recovery: dict[str, dict[str, float]] = {}
    closing: tuple[float, str, BaseException | None] = (0.0, "not closed", None)
    with StallProxy(*broker.address) as proxy:
        # an RPC server straight on the broker: only the client's connection stalls
        async with polybus.aio.connect(broker.url) as server:
            await server.rpc("double").serve(lambda n: 2 * n)
            url = broker.via(proxy.port, operation_timeout=OPERATION_TIMEOUT)
            bus = await open_bus(api, url)
            try:
                # Given a bus through the proxy that sends, counts, receives and calls
                queue = bus.work_queue("jobs")
                rpc = bus.rpc("double")
                await queue.send("warm-up")
                await queue.send_many(["a", "b"])
                assert await queue.size() == 3
                assert await rpc.call(21, timeout=5) == 42
                sub = queue.consume(prefetch=10)
                await sub.start()
                for expected in ("warm-up", "a", "b"):
                    msg = await sub.receive(timeout=5)
                    assert msg.body == expected
                    await msg.ack()

                # When the connection stalls
                proxy.stall()
                stalled["send"] = await outcome(queue.send("stalled"))
                stalled["send_many"] = await outcome(queue.send_many(["s1", "s2", "s3"]))
                stalled["size"] = await outcome(queue.size())
                stalled["call"] = await outcome(rpc.call(1, timeout=1))

                # And it flows again: resumed, then cut (every connection reset)
                proxy.resume()
                recovery["resumed"] = await round_trip(queue, sub, rpc, "after resume")
                proxy.cut()
                recovery["cut"] = await round_trip(queue, sub, rpc, "after cut")
            finally:
                proxy.resume()
                closing = await outcome(bus.close())

    figures = {
        "broker": broker.name,
        "api": api,
        "stalled": {name: (round(spent, 2), how) for name, (spent, how, _) in stalled.items()},
        "recovery_s": recovery,
        "close": (round(closing[0], 2), closing[1]),
        "proxy_connections": proxy.accepted,
    }
    print(f"\nstalled connection {broker.name}/{api}: {figures}")
    expected = {
        "send": (PublishFailed,),
        "send_many": (PublishFailed,),
        "size": (ConnectionFailed,),
        "call": (RpcTimeout, PublishFailed),
    }
    for name, allowed in expected.items():
        spent, how, exc = stalled[name]
        assert isinstance(exc, allowed), (
            f"{name} on a stalled connection: {how} after {spent:.1f}s, expected "
            f"{' or '.join(e.__name__ for e in allowed)} within {BOUND}s; {figures}"
        )
        assert spent <= BOUND, f"{name} took {spent:.1f}s (bound {BOUND}s); {figures}"
    assert closing[1] == "returned" and closing[0] <= BOUND, f"close(): {closing}; {figures}"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("api", ["aio", "blocking"])
async def test_closing_a_bus_whose_connection_is_stalled_is_bounded(broker, api):
    with StallProxy(*broker.address) as proxy:
        async with polybus.aio.connect(broker.url) as server:
            await server.rpc("double").serve(lambda n: 2 * n)
            bus = await open_bus(api, broker.via(proxy.port, operation_timeout=OPERATION_TIMEOUT))
            # Given a bus with a subscription and an RPC reply queue, each with a consumer
            queue = bus.work_queue("jobs")
            await queue.send("warm-up")
            sub = queue.consume(prefetch=10)
            await sub.start()
            await (await sub.receive(timeout=5)).ack()
            assert await bus.rpc("double").call(21, timeout=5) == 42
            # When its connection stalls and it is closed
            proxy.stall()
            spent, how, exc = await outcome(bus.close())
            # (the proxy's end resets the stalled connections: what still waits on them ends)
    figures = {"broker": broker.name, "api": api, "close": (round(spent, 2), how)}
    print(f"\nclose on a stalled connection {broker.name}/{api}: {figures}")
    # Then close() returned, within the bound of any call
    assert how == "returned", f"close() on a stalled connection: {how} ({exc!r}); {figures}"
    assert spent <= BOUND, (
        f"close() on a stalled connection took {spent:.1f}s, more than operation_timeout "
        f"({OPERATION_TIMEOUT}s) and a tick; {figures}"
    )
