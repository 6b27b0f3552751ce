"""The workloads through polybus: the asyncio API (the fast path) and, for the work queue, the
blocking API. Each case runs on fresh queues named for it and deletes them afterwards."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import struct
import time
from collections.abc import Awaitable, Callable

from polybus.aio import AsyncBus, Subscription, WorkQueue
from polybus.bench.model import (
    BATCH,
    MAX_DELAY,
    RPC_IN_FLIGHT,
    SUBSCRIBERS,
    TIMEOUT,
    Measurement,
    Plan,
)
from polybus.blocking.bus import Bus

_names = itertools.count(1)
_STAMP = struct.Struct("!d")
SUSTAINED = 0.9  # latency: below this share of the offered rate, the broker fell behind


def fresh(kind: str, size: int) -> str:
    """A queue or exchange name used by one case only."""
    return f"{kind}{size}.{next(_names)}"


def body_of(size: int) -> bytes:
    return os.urandom(size)


async def send_batches(queue: WorkQueue, body: bytes, count: int) -> None:
    for start in range(0, count, BATCH):
        await queue.send_many([body] * min(BATCH, count - start))


async def drain(sub: Subscription, count: int, ack: bool = True) -> None:
    for _ in range(count):
        message = await sub.receive(TIMEOUT)
        if ack:
            await message.ack()


async def consume(queue: WorkQueue, count: int) -> None:
    async with queue.consume(prefetch=BATCH) as sub:
        await drain(sub, count)


async def in_flight(call: Callable[[], Awaitable[object]], count: int, window: int) -> None:
    """``count`` calls, ``window`` at a time (each wave gathered before the next starts)."""
    for start in range(0, count, window):
        await asyncio.gather(*(call() for _ in range(min(window, count - start))))


async def workqueue(bus: AsyncBus, size: int, plan: Plan) -> list[Measurement]:
    """Send N (durable queue, persistent messages, confirmed) and then consume N with acks."""
    queue = bus.work_queue(fresh("wq", size), dead_letter=None)
    body = body_of(size)
    try:
        await send_batches(queue, body, plan.warmup)
        await consume(queue, plan.warmup)
        started = time.perf_counter()
        await send_batches(queue, body, plan.messages)
        sent = time.perf_counter()
        await consume(queue, plan.messages)
        consumed = time.perf_counter()
        for _ in range(plan.each):
            await queue.send(body)
        sent_each = time.perf_counter()
        await consume(queue, plan.each)
    finally:
        await queue.delete()
    return [
        Measurement("workqueue-send", plan.messages, sent - started, f"send_many x {BATCH}"),
        Measurement("workqueue-send-each", plan.each, sent_each - consumed, "send, one at a time"),
        Measurement(
            "workqueue-consume", plan.messages, consumed - sent, f"prefetch {BATCH}, ack each"
        ),
    ]


async def latency(bus: AsyncBus, size: int, plan: Plan) -> list[Measurement]:
    """Send at a steady rate (each send its own task, so a slow confirm does not slow the rate)
    and time send→receive. The clock starts at the send's scheduled time, so a sender that
    falls behind shows up in the figures instead of hiding (no coordinated omission)."""
    queue = bus.work_queue(fresh("lat", size), dead_letter=None)
    padding = body_of(max(0, size - _STAMP.size))
    await queue.declare()

    async def run(count: int) -> tuple[list[float], float]:
        latencies: list[float] = []

        async def receive(sub: Subscription) -> None:
            for _ in range(count):
                message = await sub.receive(TIMEOUT)
                latencies.append(time.perf_counter() - _STAMP.unpack_from(message.data)[0])
                await message.ack()

        async with queue.consume(prefetch=BATCH) as sub:  # consuming before the clock starts
            receiver = asyncio.ensure_future(receive(sub))
            sends: list[asyncio.Task[None]] = []
            started = time.perf_counter()
            for i in range(count):
                due = started + i / plan.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sends.append(asyncio.ensure_future(queue.send(_STAMP.pack(due) + padding)))
            await asyncio.gather(*sends)
            await receiver
        return latencies, time.perf_counter() - started

    try:
        await run(plan.warmup)
        latencies, seconds = await run(plan.latency)
    finally:
        await queue.delete()
    mode = f"{plan.rate:g} msgs/s offered, sends in flight"
    if plan.latency / seconds < SUSTAINED * plan.rate:
        mode += "; rate NOT sustained: latency includes the backlog"
    return [Measurement("latency", plan.latency, seconds, mode, latencies)]


async def delay(bus: AsyncBus, size: int, plan: Plan) -> list[Measurement]:
    """Send N messages, each delayed by a random 0 to 2 s, ``BATCH`` sends in flight, and time
    how late each arrives: its latency is receive time less the time it fell due (stamped in
    the body at send, so the broker's own count starts later and a negative lateness would be
    an early delivery)."""
    queue = bus.work_queue(fresh("delay", size), dead_letter=None)
    padding = body_of(max(0, size - _STAMP.size))
    rng = random.Random(size)  # the same delays on every broker
    await queue.declare()
    lateness: list[float] = []

    async def send() -> None:
        wait = rng.uniform(0, MAX_DELAY)
        await queue.send(_STAMP.pack(time.perf_counter() + wait) + padding, delay=wait)

    async def receive(sub: Subscription) -> None:
        for _ in range(plan.delayed):
            message = await sub.receive(TIMEOUT)
            lateness.append(time.perf_counter() - _STAMP.unpack_from(message.data)[0])
            await message.ack()

    try:
        async with queue.consume(prefetch=BATCH) as sub:
            receiver = asyncio.ensure_future(receive(sub))
            started = time.perf_counter()
            await in_flight(send, plan.delayed, BATCH)
            await receiver
            seconds = time.perf_counter() - started
    finally:
        await queue.delete()
    mode = (
        f"random 0-{MAX_DELAY:g} s delays; p50/p95/p99 are lateness past due, the earliest"
        f" {min(lateness) * 1000:+.1f} ms"
    )
    return [Measurement("delay", plan.delayed, seconds, mode, [max(0.0, x) for x in lateness])]


async def fanout(bus: AsyncBus, size: int, plan: Plan) -> list[Measurement]:
    """Publish to a fanout exchange with four transient subscribers; rate = deliveries/s."""
    pubsub = bus.pubsub(fresh("fan", size))
    body = body_of(size)
    subs = [pubsub.subscribe(prefetch=BATCH) for _ in range(SUBSCRIBERS)]
    try:
        for sub in subs:
            await sub.start()

        async def run(count: int) -> float:
            started = time.perf_counter()
            receivers = [asyncio.ensure_future(drain(sub, count, ack=False)) for sub in subs]
            await in_flight(lambda: pubsub.publish(body), count, BATCH)
            await asyncio.gather(*receivers)
            return time.perf_counter() - started

        await run(plan.warmup)
        seconds = await run(plan.fanout)
    finally:
        for sub in subs:
            await sub.close()
        await pubsub.delete()
    mode = f"{SUBSCRIBERS} subscribers, {BATCH} publishes in flight"
    return [Measurement("fanout", plan.fanout * SUBSCRIBERS, seconds, mode)]


async def echo(body: bytes) -> bytes:
    return body


async def rpc(bus: AsyncBus, server_bus: AsyncBus, size: int, plan: Plan) -> list[Measurement]:
    """Round trips to an echo server on its own connection: one at a time, then 32 in flight."""
    name = fresh("rpc", size)
    server = await server_bus.rpc(name).serve(echo, concurrency=RPC_IN_FLIGHT)
    client = bus.rpc(name)
    body = body_of(size)

    async def timed_call(latencies: list[float]) -> None:
        started = time.perf_counter()
        await client.call(body, timeout=TIMEOUT)
        latencies.append(time.perf_counter() - started)

    async def sequential(count: int) -> tuple[list[float], float]:
        latencies: list[float] = []
        started = time.perf_counter()
        for _ in range(count):
            await timed_call(latencies)
        return latencies, time.perf_counter() - started

    async def parallel(count: int) -> tuple[list[float], float]:
        latencies: list[float] = []
        started = time.perf_counter()

        async def caller(calls: int) -> None:
            for _ in range(calls):
                await timed_call(latencies)

        share, extra = divmod(count, RPC_IN_FLIGHT)
        await asyncio.gather(*(caller(share + (i < extra)) for i in range(RPC_IN_FLIGHT)))
        return latencies, time.perf_counter() - started

    try:
        await sequential(plan.warmup)
        seq, seq_s = await sequential(plan.rpc)
        par, par_s = await parallel(plan.rpc)
    finally:
        await server.close()
        await client.delete()
    return [
        Measurement("rpc-seq", plan.rpc, seq_s, "one call at a time", seq),
        Measurement("rpc-32", plan.rpc, par_s, f"{RPC_IN_FLIGHT} calls in flight", par),
    ]


def blocking_workqueue(bus: Bus, size: int, plan: Plan) -> list[Measurement]:
    """The work-queue case through the blocking API (``send_many`` batches, iterate + ack)."""
    queue = bus.work_queue(fresh("bwq", size), dead_letter=None)
    body = body_of(size)

    def consume(count: int) -> None:
        with queue.consume(prefetch=BATCH) as sub:
            for _ in range(count):
                sub.receive(TIMEOUT).ack()

    def send(count: int) -> None:
        for start in range(0, count, BATCH):
            queue.send_many([body] * min(BATCH, count - start))

    try:
        send(plan.warmup)
        consume(plan.warmup)
        started = time.perf_counter()
        send(plan.messages)
        sent = time.perf_counter()
        consume(plan.messages)
        consumed = time.perf_counter()
        for _ in range(plan.each):
            queue.send(body)
        sent_each = time.perf_counter()
        consume(plan.each)
    finally:
        queue.delete()
    return [
        Measurement("workqueue-send", plan.messages, sent - started, f"send_many x {BATCH}"),
        Measurement("workqueue-send-each", plan.each, sent_each - consumed, "send, one at a time"),
        Measurement(
            "workqueue-consume", plan.messages, consumed - sent, f"prefetch {BATCH}, ack each"
        ),
    ]


def blocking_rpc(bus: Bus, server_bus: Bus, size: int, plan: Plan) -> list[Measurement]:
    """RPC through the blocking API: calls one at a time, each waited for on its thread."""
    name = fresh("brpc", size)
    server = server_bus.rpc(name).serve(lambda body: body)
    client = bus.rpc(name)
    body = body_of(size)
    latencies: list[float] = []
    try:
        for _ in range(plan.warmup):
            client.call(body, timeout=TIMEOUT)
        started = time.perf_counter()
        for _ in range(plan.rpc):
            called = time.perf_counter()
            client.call(body, timeout=TIMEOUT)
            latencies.append(time.perf_counter() - called)
        seconds = time.perf_counter() - started
    finally:
        server.close()
        client.delete()
    return [Measurement("rpc-seq", plan.rpc, seconds, "one call at a time", latencies)]
