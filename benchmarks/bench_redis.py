"""polybus-on-Redis beside raw redis-py Streams and kombu's Redis transport, same workload, one run.

Work queue: N messages (1 KB and 10 KB bodies) into a queue, then consumed with manual acks and
prefetch 100. Raw redis-py: pipelined XADD (1000 per round trip), XREADGROUP COUNT 100 + one XACK
per batch. kombu: ``Producer.publish`` each, a consumer with ``prefetch_count=100`` acking each.
polybus, asyncio API: ``send_many`` (a batch), ``send`` with 1000 in flight, and a worker with an
async handler (ack on return); blocking API: ``send`` and ``msg.ack()`` one at a time.

Everything lives under its own key prefix on the given server and is deleted afterwards.

    python benchmarks/bench_redis.py [--messages 20000] [--url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable

import kombu
import redis

import polybus
import polybus.aio
from polybus.testing.redis_harness import delete_keys

PREFETCH = 100
IN_FLIGHT = 1000


class Bench:
    def __init__(self, url: str, messages: int) -> None:
        self.url = url
        self.messages = messages
        self.namespace = f"bench{os.urandom(3).hex()}"

    def polybus_url(self) -> str:
        return f"{self.url}?namespace={self.namespace}"

    def cleanup(self) -> None:
        delete_keys(self.url, f"*{self.namespace}*")


def timed(count: int, run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


# -- raw redis-py Streams -----------------------------------------------------------------------


def raw(bench: Bench, body: bytes) -> tuple[float, float]:
    client = redis.Redis.from_url(bench.url)
    stream = f"raw:{bench.namespace}:{len(body)}"
    client.xgroup_create(stream, "g", "0", mkstream=True)
    n = bench.messages

    def send() -> None:
        for start in range(0, n, 1000):
            pipe = client.pipeline(transaction=False)
            for _ in range(min(1000, n - start)):
                pipe.xadd(stream, {"body": body})
            pipe.execute()

    def consume() -> None:
        done = 0
        while done < n:
            reply = client.xreadgroup("g", "c", {stream: ">"}, count=PREFETCH, block=1000)
            ids = [entry_id for _, entries in reply for entry_id, _ in entries]
            client.xack(stream, "g", *ids)
            done += len(ids)

    rates = timed(n, send), timed(n, consume)
    client.close()
    return rates


# -- kombu --------------------------------------------------------------------------------------


def kombu_redis(bench: Bench, body: bytes) -> tuple[float, float]:
    name = f"{bench.namespace}.kombu{len(body)}"
    n = bench.messages
    with kombu.Connection(bench.url) as connection:
        exchange = kombu.Exchange(name, type="direct", durable=True)
        queue = kombu.Queue(name, exchange, routing_key=name, durable=True)
        channel = connection.default_channel
        queue(channel).declare()

        def send() -> None:
            producer = connection.Producer()
            for _ in range(n):
                producer.publish(
                    body,
                    exchange=exchange,
                    routing_key=name,
                    content_type="application/octet-stream",
                    content_encoding="binary",
                )

        def consume() -> None:
            received = 0

            def on_message(_body: object, message: kombu.Message) -> None:
                nonlocal received
                received += 1
                message.ack()

            with connection.Consumer(
                queue,
                callbacks=[on_message],
                prefetch_count=PREFETCH,
                accept=["application/octet-stream"],
            ):
                while received < n:
                    connection.drain_events(timeout=10)

        rates = timed(n, send), timed(n, consume)
        queue(channel).delete()
    return rates


# -- polybus ------------------------------------------------------------------------------------


async def polybus_aio(bench: Bench, body: bytes) -> tuple[float, float, float]:
    """Rates: send_many, send with many in flight, worker consume (of both sends' messages)."""
    n = bench.messages
    async with polybus.aio.connect(bench.polybus_url()) as bus:
        q = bus.work_queue(f"aio{len(body)}", dead_letter=None)
        await q.declare()
        started = time.perf_counter()
        for start in range(0, n, 10_000):
            await q.send_many([body] * min(10_000, n - start))
        batch = n / (time.perf_counter() - started)

        async def sender(count: int) -> None:
            for _ in range(count):
                await q.send(body)

        started = time.perf_counter()
        share, extra = divmod(n, IN_FLIGHT)
        await asyncio.gather(*(sender(share + (i < extra)) for i in range(IN_FLIGHT)))
        in_flight = n / (time.perf_counter() - started)

        done = asyncio.Event()
        received = 0

        async def handle(_msg: object) -> None:
            nonlocal received
            received += 1
            if received == 2 * n:
                done.set()

        started = time.perf_counter()
        worker = await q.worker(handle, prefetch=PREFETCH, concurrency=PREFETCH)
        await done.wait()
        consume = 2 * n / (time.perf_counter() - started)
        await worker.close()
        await q.delete()
    return batch, in_flight, consume


def polybus_blocking(bench: Bench, body: bytes) -> tuple[float, float]:
    n = bench.messages
    with polybus.connect(bench.polybus_url()) as bus:
        q = bus.work_queue(f"blocking{len(body)}", dead_letter=None)

        def send() -> None:
            for _ in range(n):
                q.send(body)

        def consume() -> None:
            with q.consume(prefetch=PREFETCH) as sub:
                for count, msg in enumerate(sub, 1):
                    msg.ack()
                    if count == n:
                        return

        rates = timed(n, send), timed(n, consume)
        q.delete()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    bench = Bench(args.url, args.messages)
    rows: list[tuple[str, int, str, float]] = []
    try:
        for size in (1024, 10 * 1024):
            body = os.urandom(size)
            raw_send, raw_consume = raw(bench, body)
            rows += [("raw redis-py", size, "send (pipelined XADD)", raw_send)]
            rows += [("raw redis-py", size, "consume (XREADGROUP 100 + XACK)", raw_consume)]
            batch, in_flight, consume = asyncio.run(polybus_aio(bench, body))
            rows += [("polybus aio", size, "send (send_many batch)", batch)]
            rows += [("polybus aio", size, f"send ({IN_FLIGHT} in flight)", in_flight)]
            rows += [("polybus aio", size, "consume (worker, ack each)", consume)]
            blocking_send, blocking_consume = polybus_blocking(bench, body)
            rows += [("polybus blocking", size, "send (one at a time)", blocking_send)]
            rows += [("polybus blocking", size, "consume (ack each)", blocking_consume)]
            kombu_send, kombu_consume = kombu_redis(bench, body)
            rows += [("kombu redis", size, "send (publish each)", kombu_send)]
            rows += [("kombu redis", size, "consume (ack each)", kombu_consume)]
            print_table(rows, size, args.messages)
            rows = []
    finally:
        bench.cleanup()


def print_table(rows: list[tuple[str, int, str, float]], size: int, messages: int) -> None:
    rate = {(client, how.split(" ")[0], how): r for client, _, how, r in rows}
    raw_send = next(r for (c, op, _), r in rate.items() if c == "raw redis-py" and op == "send")
    raw_consume = next(
        r for (c, op, _), r in rate.items() if c == "raw redis-py" and op == "consume"
    )
    kombu_send = next(r for (c, op, _), r in rate.items() if c == "kombu redis" and op == "send")
    kombu_consume = next(
        r for (c, op, _), r in rate.items() if c == "kombu redis" and op == "consume"
    )
    print(f"\n{size // 1024} KB bodies, {messages} messages, prefetch {PREFETCH}")
    print(f"{'client':18} {'operation':34} {'msg/s':>9} {'÷ raw':>7} {'÷ kombu':>8}")
    for (client, op, how), r in rate.items():
        base_raw = raw_send if op == "send" else raw_consume
        base_kombu = kombu_send if op == "send" else kombu_consume
        print(f"{client:18} {how:34} {r:9.0f} {r / base_raw:7.2f} {r / base_kombu:8.1f}")


if __name__ == "__main__":
    main()
