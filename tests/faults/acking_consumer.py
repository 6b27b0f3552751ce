"""A work-queue consumer in its own process, for the killed-consumer test: it logs what it takes.

``python acking_consumer.py URL QUEUE PREFETCH API WORK LOG``: consumes ``QUEUE`` with the
blocking (``API=blocking``) or asyncio (``API=aio``) API, holds each message ``WORK`` seconds,
acks it, and appends to ``LOG`` (flushed line by line, one ``write`` each)::

    ready <t>
    got <body> <delivery_count> <t>
    acking <body> <t>
    acked <body> <t>

``<t>`` is ``time.monotonic()``, which every process on the machine reads from the same clock.
"acking" is written just before the ack call, "acked" once it
returned: a process killed between the two may or may not have acked. It runs until it is killed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

import polybus
import polybus.aio


def log(out: TextIO, line: str) -> None:
    out.write(f"{line} {time.monotonic():.6f}\n")
    out.flush()


def run_blocking(url: str, queue: str, prefetch: int, work: float, out: TextIO) -> None:
    with polybus.connect(url) as bus, bus.work_queue(queue).consume(prefetch=prefetch) as sub:
        sub.start()
        log(out, "ready")
        for msg in sub:
            log(out, f"got {msg.body} {msg.delivery_count}")
            time.sleep(work)
            log(out, f"acking {msg.body}")
            msg.ack()
            log(out, f"acked {msg.body}")


async def run_aio(url: str, queue: str, prefetch: int, work: float, out: TextIO) -> None:
    async with (
        polybus.aio.connect(url) as bus,
        bus.work_queue(queue).consume(prefetch=prefetch) as sub,
    ):
        await sub.start()
        log(out, "ready")
        async for msg in sub:
            log(out, f"got {msg.body} {msg.delivery_count}")
            await asyncio.sleep(work)
            log(out, f"acking {msg.body}")
            await msg.ack()
            log(out, f"acked {msg.body}")


def main(url: str, queue: str, prefetch: str, api: str, work: str, path: str) -> None:
    with open(path, "a", encoding="utf-8") as out:
        if api == "blocking":
            run_blocking(url, queue, int(prefetch), float(work), out)
        elif api == "aio":
            asyncio.run(run_aio(url, queue, int(prefetch), float(work), out))
        else:
            raise SystemExit(f"unknown API {api!r}: blocking or aio")


if __name__ == "__main__":
    main(*sys.argv[1:])
