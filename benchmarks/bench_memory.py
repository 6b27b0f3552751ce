"""Memory-transport throughput: send then consume with acks, 1 KB bodies.

Four modes — the blocking API and the asyncio API, each sending one message at a time and in
``send_many`` batches — all consuming by iterating a subscription with prefetch 100 and acking
each message. The aims: asyncio >= 100k msgs/s, blocking >= 30k msgs/s (send + consume, i.e.
messages moved end to end per second of the whole run).

    python benchmarks/bench_memory.py [--messages N] [--batch B] [--mode MODE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable

import polybus
import polybus.aio

BODY = os.urandom(1024)
PREFETCH = 100


def blocking_run(messages: int, batch: int) -> tuple[float, float]:
    """Send ``messages`` (one at a time when ``batch`` is 1), then consume them; both timings."""
    with polybus.connect(f"memory://bench-blocking-{batch}") as bus:
        queue = bus.work_queue("bench", dead_letter=None)
        queue.declare()
        started = time.perf_counter()
        if batch == 1:
            for _ in range(messages):
                queue.send(BODY)
        else:
            for _ in range(0, messages, batch):
                queue.send_many([BODY] * batch)
        sent = time.perf_counter()
        received = 0
        with queue.consume(prefetch=PREFETCH) as sub:
            for message in sub:
                message.ack()
                received += 1
                if received == messages:
                    break
        consumed = time.perf_counter()
        queue.delete()
    return sent - started, consumed - sent


async def async_run(messages: int, batch: int) -> tuple[float, float]:
    """The asyncio API's twin of ``blocking_run``."""
    async with polybus.aio.connect(f"memory://bench-async-{batch}") as bus:
        queue = bus.work_queue("bench", dead_letter=None)
        await queue.declare()
        started = time.perf_counter()
        if batch == 1:
            for _ in range(messages):
                await queue.send(BODY)
        else:
            for _ in range(0, messages, batch):
                await queue.send_many([BODY] * batch)
        sent = time.perf_counter()
        received = 0
        async with queue.consume(prefetch=PREFETCH) as sub:
            async for message in sub:
                await message.ack()
                received += 1
                if received == messages:
                    break
        consumed = time.perf_counter()
        await queue.delete()
    return sent - started, consumed - sent


MODES: dict[str, tuple[str, Callable[[int, int], tuple[float, float]], bool]] = {
    "blocking-send": ("blocking API, send one at a time", blocking_run, False),
    "blocking-send_many": ("blocking API, send_many batches", blocking_run, True),
    "asyncio-send": (
        "asyncio API, send one at a time",
        lambda n, b: asyncio.run(async_run(n, b)),
        False,
    ),
    "asyncio-send_many": (
        "asyncio API, send_many batches",
        lambda n, b: asyncio.run(async_run(n, b)),
        True,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100, help="send_many batch size")
    parser.add_argument("--mode", choices=sorted(MODES), action="append")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per mode; the best is shown (others' noise)"
    )
    args = parser.parse_args()
    messages = args.messages - args.messages % args.batch
    print(
        f"memory transport, {messages} messages of {len(BODY)} B, consume prefetch {PREFETCH}, "
        f"best of {args.repeat} runs per phase"
    )
    for mode in args.mode or list(MODES):
        label, run, batched = MODES[mode]
        batch = args.batch if batched else 1
        run(min(messages, 1000), batch)  # warm-up
        runs = [run(messages, batch) for _ in range(args.repeat)]
        send_s = min(send for send, _consume in runs)
        consume_s = min(consume for _send, consume in runs)
        total = send_s + consume_s
        print(
            f"{label:<34} send {messages / send_s:>9,.0f} msgs/s  "
            f"consume+ack {messages / consume_s:>9,.0f} msgs/s  "
            f"end to end {messages / total:>9,.0f} msgs/s"
        )


if __name__ == "__main__":
    main()
