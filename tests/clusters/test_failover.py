"""A node of a test-owned cluster killed (SIGKILL) while two producers send 20,000 confirmed
messages and two consumers ack them: once the node the first producer is connected to, once
the node that leads the queue. Every confirmed message is received (duplicates allowed: a
batch whose confirm was lost is sent again), and both sides resume on their own, without the
node, which comes back only after the test's figures are taken.

The figures (``pytest -s`` prints them) are the closing table of the clusters issue.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter

import pytest
from cluster_cases import CASES

import polybus.aio
from polybus import ConnectionFailed, PublishFailed, ReceiveTimeout

TOTAL = 20_000
PRODUCERS = 2
CONSUMERS = 2
BATCH = 100
KILL_AFTER = 5_000  # confirmed messages before the node is killed
OPERATION_TIMEOUT = 5
CATCH_UP_TIMEOUT = 60.0
RESEND_TIMEOUT = 60.0  # seconds a batch is sent again before the test fails


@pytest.mark.timeout(240)
@pytest.mark.parametrize("cluster", CASES, ids=[case.id for case in CASES], indirect=True)
async def test_confirmed_messages_survive_a_node_killed_mid_stream(cluster):
    url = cluster.url(operation_timeout=OPERATION_TIMEOUT)
    confirmed: dict[int, float] = {}  # body -> when its batch was confirmed
    not_confirmed: Counter[str] = Counter()
    received: dict[int, int] = Counter()  # body -> deliveries
    receipts: list[float] = []

    producers = [await polybus.aio.connect(url) for _ in range(PRODUCERS)]
    consumers = [await polybus.aio.connect(url) for _ in range(CONSUMERS)]
    try:
        await producers[0].work_queue("stream").declare()

        async def produce(bus: polybus.aio.AsyncBus, bodies: range) -> None:
            queue = bus.work_queue("stream")
            for start in range(bodies.start, bodies.stop, BATCH):
                batch = list(range(start, min(start + BATCH, bodies.stop)))
                given_up = time.monotonic() + RESEND_TIMEOUT
                while True:
                    try:
                        await queue.send_many(batch)
                        break
                    except (PublishFailed, ConnectionFailed) as exc:
                        # raised, never dropped: send the batch again
                        not_confirmed[type(exc).__name__] += 1
                        assert time.monotonic() < given_up, f"the cluster never recovered: {exc}"
                        await asyncio.sleep(0.1)
                now = time.monotonic()
                confirmed.update(dict.fromkeys(batch, now))

        async def consume(bus: polybus.aio.AsyncBus) -> None:
            async with bus.work_queue("stream").consume(prefetch=50) as sub:
                while True:
                    try:
                        msg = await sub.receive(timeout=1)
                    except ReceiveTimeout:
                        continue
                    received[msg.body] += 1
                    receipts.append(time.monotonic())
                    await msg.ack()

        share = TOTAL // PRODUCERS
        producing = [
            asyncio.ensure_future(produce(bus, range(i * share, (i + 1) * share)))
            for i, bus in enumerate(producers)
        ]
        consuming = [asyncio.ensure_future(consume(bus)) for bus in consumers]
        try:
            while len(confirmed) < KILL_AFTER:
                assert not any(task.done() for task in producing + consuming)
                await asyncio.sleep(0.01)
            node = await cluster.victim(producers[0], "stream")
            at = time.monotonic()
            await asyncio.to_thread(cluster.kill, node)
            await asyncio.gather(*producing)
            sent = time.monotonic()
            deadline = sent + CATCH_UP_TIMEOUT
            while not set(confirmed) <= set(received) and time.monotonic() < deadline:
                assert not any(task.done() for task in consuming), consuming
                if not cluster.case.lossless and receipts and time.monotonic() - receipts[-1] > 10:
                    break  # nothing more is coming: what is missing was lost
                await asyncio.sleep(0.1)
            caught_up = time.monotonic() - sent
        finally:
            for task in producing + consuming:
                task.cancel()
            await asyncio.gather(*producing, *consuming, return_exceptions=True)
    finally:
        for bus in producers + consumers:
            await bus.close()

    def resumed(times: list[float]) -> float:
        """The longest pause in ``times`` that spans the kill."""
        before = max((t for t in times if t <= at), default=at)
        after = sorted(t for t in times if t > at)
        gaps = [b - a for a, b in itertools.pairwise([before, *after])]
        return round(max(gaps, default=float("nan")), 2)

    missing = sorted(set(confirmed) - set(received))
    figures = {
        "case": cluster.case.id,
        "victim": f"node {node + 1}",
        "confirmed": len(confirmed),
        "not_confirmed_then_resent": dict(not_confirmed),
        "lost": len(missing),
        "duplicated": sum(received.values()) - len(received),
        "producers_paused_s": resumed(sorted(confirmed.values())),
        "consumers_paused_s": resumed(receipts),
        "catch_up_after_last_send_s": round(caught_up, 2),
    }
    print(f"\nfailover {cluster.case.id}: {figures}")
    assert len(confirmed) == TOTAL, figures
    if cluster.case.lossless:
        assert not missing, f"confirmed but never received: {missing[:20]}; {figures}"
    assert set(received) <= set(range(TOTAL)), f"received what was never sent; {figures}"
