"""A consumer in its own process, for the liveness tests: it takes messages and prints them.

``python consumer_process.py URL QUEUE PREFETCH HOLD``: prints ``got <body>`` per message and
acks each after ``HOLD`` seconds (``HOLD < 0``: never acks, as a process about to be killed;
``block:HOLD``: holds it with ``time.sleep``, blocking the event loop, as a careless handler).
"""

from __future__ import annotations

import asyncio
import sys
import time

import polybus.aio


async def main(url: str, queue: str, prefetch: int, hold_arg: str) -> None:
    blocking = hold_arg.startswith("block:")
    hold = float(hold_arg.removeprefix("block:"))
    async with (
        polybus.aio.connect(url) as bus,
        bus.work_queue(queue).consume(prefetch=prefetch) as sub,
    ):
        print("ready", flush=True)
        async for msg in sub:
            print(f"got {msg.body} {msg.delivery_count}", flush=True)
            if blocking:
                time.sleep(hold)  # noqa: ASYNC251 - blocking the loop is the point
                await msg.ack()
                print(f"acked {msg.body}", flush=True)
            elif hold >= 0:
                await asyncio.sleep(hold)
                await msg.ack()
                print(f"acked {msg.body}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
