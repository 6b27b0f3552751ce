"""The test-owned broker restarted twice while a producer streams confirmed messages and a
consumer acks them: every confirmed message is received (duplicates allowed), the producer and
the consumer recover on their own, and every failure while the broker is away is a
``PublishFailed`` or ``ConnectionFailed`` raised in bounded time.

Redis's owned server runs with ``appendonly yes`` and ``appendfsync always`` and is restarted
with SIGKILL; RabbitMQ's owned node is stopped with ``rabbitmqctl stop`` and started again.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

import polybus.aio
from polybus import ConnectionFailed, PublishFailed, ReceiveTimeout

OPERATION_TIMEOUT = 5  # a send while the broker is away raises within this (and a tick)
RESTARTS = 2
STEADY = 1.5  # seconds of normal flow before, between and after the restarts
RECOVERY_TIMEOUT = 30.0  # for the first confirmed send after a restart
CATCH_UP_TIMEOUT = 30.0
SEND_BOUND = OPERATION_TIMEOUT + 2.0


@pytest.mark.timeout(150)
async def test_confirmed_messages_survive_broker_restarts_and_both_sides_recover(broker):
    url = broker.with_options(operation_timeout=OPERATION_TIMEOUT)
    confirmed: dict[int, float] = {}  # body -> when its send returned
    failures: Counter[str] = Counter()
    slowest_failure = 0.0
    received: set[int] = set()
    deliveries = 0
    attempted = 0
    stop = asyncio.Event()

    async with polybus.aio.connect(url) as producer, polybus.aio.connect(url) as consumer:
        queue = producer.work_queue("stream")
        await queue.declare()

        async def produce() -> None:
            nonlocal slowest_failure, attempted
            n = 0
            while not stop.is_set():
                attempted = n + 1
                started = time.monotonic()
                try:
                    await queue.send(n)
                    confirmed[n] = time.monotonic()
                except (PublishFailed, ConnectionFailed) as exc:
                    # raised, not dropped: the caller knows it was not confirmed
                    failures[type(exc).__name__] += 1
                    slowest_failure = max(slowest_failure, time.monotonic() - started)
                    await asyncio.sleep(0.05)
                n += 1
                await asyncio.sleep(0.005)

        async def consume() -> None:
            nonlocal deliveries
            async with consumer.work_queue("stream").consume(prefetch=20) as sub:
                while True:
                    try:
                        msg = await sub.receive(timeout=1)
                    except ReceiveTimeout:
                        continue
                    received.add(msg.body)
                    deliveries += 1
                    await msg.ack()

        async def first_confirm_after(moment: float) -> float:
            deadline = time.monotonic() + RECOVERY_TIMEOUT
            while not any(at > moment for at in confirmed.values()):
                assert time.monotonic() < deadline, f"no confirmed send within {RECOVERY_TIMEOUT}s"
                assert not producing.done(), producing
                await asyncio.sleep(0.02)
            return min(at for at in confirmed.values() if at > moment)

        producing = asyncio.ensure_future(produce())
        consuming = asyncio.ensure_future(consume())
        restarts = []
        try:
            await asyncio.sleep(STEADY)
            for _ in range(RESTARTS):
                # When the broker restarts mid-stream
                down = time.monotonic()
                await asyncio.to_thread(broker.restart)
                up = time.monotonic()
                recovered = await first_confirm_after(up)
                before = max((at for at in confirmed.values() if at < down), default=down)
                restarts.append(
                    {
                        "restart_s": round(up - down, 2),
                        "recovery_after_up_s": round(recovered - up, 2),
                        "no_confirm_for_s": round(recovered - before, 2),
                    }
                )
                await asyncio.sleep(STEADY)
            stop.set()
            await producing
            # Then the consumer resumed and got every confirmed message (duplicates allowed)
            deadline = time.monotonic() + CATCH_UP_TIMEOUT
            while not set(confirmed) <= received and time.monotonic() < deadline:
                assert not consuming.done(), consuming
                await asyncio.sleep(0.1)
            caught_up = time.monotonic() - (deadline - CATCH_UP_TIMEOUT)
        finally:
            stop.set()
            consuming.cancel()
            await asyncio.gather(producing, consuming, return_exceptions=True)

    missing = sorted(set(confirmed) - received)
    figures = {
        "broker": broker.name,
        "confirmed": len(confirmed),
        "not_confirmed": dict(failures),
        "slowest_failed_send_s": round(slowest_failure, 2),
        "received": len(received),
        "duplicate_deliveries": deliveries - len(received),
        "missing": len(missing),
        "restarts": restarts,
        "catch_up_s": round(caught_up, 2),
    }
    print(f"\nbroker restarts {broker.name}: {figures}")
    assert not missing, f"confirmed but never received: {missing[:20]}; {figures}"
    assert received <= set(range(attempted)), f"received what was never sent; {figures}"
    assert slowest_failure <= SEND_BOUND, f"a failed send took too long; {figures}"
