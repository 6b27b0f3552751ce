"""polybus-on-Redis beside raw redis-py Streams and kombu's Redis transport, same workload, one run.

Work queue: N messages (1 KB and 10 KB bodies) into a queue, then consumed with manual acks and
prefetch 100. Raw redis-py: pipelined XADD (1000 per round trip), XREADGROUP COUNT 100 + one XACK
per batch. kombu: ``Producer.publish`` each, a consumer with ``prefetch_count=100`` acking each.
polybus, asyncio API: ``send_many`` (batches of 10,000), ``send`` with 1000 in flight, a
subscription (``await sub.receive()`` + ``await msg.ack()``) and a worker (100 async handlers,
ack on return); blocking API: ``send`` one at a time, ``send_many``, and a subscription acking
each message. Every row is the best of ``--repeat`` runs (the others are the machine's noise).

Everything lives under its own key prefix on the given server and is deleted afterwards.

    python benchmarks/bench_redis.py [--messages 20000] [--repeat 3] [--url redis://...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import kombu
import redis

import polybus
import polybus.aio
from polybus.testing.redis_harness import delete_keys

PREFETCH = 100
IN_FLIGHT = 1000
SEND_MANY = 10_000

Rates = dict[str, float]  # operation -> messages/s


def timed(count: int, run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


async def timed_async(count: int, run: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await run()
    return count / (time.perf_counter() - started)


class Bench:
    def __init__(self, url: str, messages: int) -> None:
        self.url = url
        self.messages = messages
        self.namespace = f"bench{os.urandom(3).hex()}"

    def polybus_url(self) -> str:
        return f"{self.url}?namespace={self.namespace}"

    def cleanup(self) -> None:
        delete_keys(self.url, f"*{self.namespace}*")


# -- raw redis-py Streams -----------------------------------------------------------------------


def raw(bench: Bench, body: bytes) -> Rates:
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

    rates = {"send": timed(n, send), "consume": timed(n, consume)}
    client.delete(stream)
    client.close()
    return rates


# -- kombu --------------------------------------------------------------------------------------


def kombu_redis(bench: Bench, body: bytes) -> Rates:
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

        rates = {"send": timed(n, send), "consume": timed(n, consume)}
        queue(channel).delete()
    return rates


# -- polybus ------------------------------------------------------------------------------------


async def polybus_aio(bench: Bench, body: bytes) -> Rates:
    n = bench.messages
    rates: Rates = {}
    async with polybus.aio.connect(bench.polybus_url()) as bus:
        q = bus.work_queue(f"aio{len(body)}", dead_letter=None)
        await q.declare()

        async def send_many() -> None:
            for start in range(0, n, SEND_MANY):
                await q.send_many([body] * min(SEND_MANY, n - start))

        async def send_in_flight() -> None:
            async def sender(count: int) -> None:
                for _ in range(count):
                    await q.send(body)

            share, extra = divmod(n, IN_FLIGHT)
            await asyncio.gather(*(sender(share + (i < extra)) for i in range(IN_FLIGHT)))

        async def subscription() -> None:
            async with q.consume(prefetch=PREFETCH) as sub:
                for _ in range(n):
                    msg = await sub.receive(timeout=30)
                    await msg.ack()

        async def worker() -> None:
            done = asyncio.Event()
            received = 0

            async def handle(_msg: object) -> None:
                nonlocal received
                received += 1
                if received == n:
                    done.set()

            running = await q.worker(handle, prefetch=PREFETCH, concurrency=PREFETCH)
            await done.wait()
            await running.close()

        rates["send (send_many)"] = await timed_async(n, send_many)
        rates["consume (subscription, ack each)"] = await timed_async(n, subscription)
        rates[f"send ({IN_FLIGHT} in flight)"] = await timed_async(n, send_in_flight)
        rates["consume (worker, 100 async handlers)"] = await timed_async(n, worker)
        await q.delete()
    return rates


def polybus_blocking(bench: Bench, body: bytes) -> Rates:
    n = bench.messages
    one_at_a_time = max(1, n // 10)  # one loop-thread round trip each: a tenth is plenty
    rates: Rates = {}
    with polybus.connect(bench.polybus_url()) as bus:
        q = bus.work_queue(f"blocking{len(body)}", dead_letter=None)

        def send_one_at_a_time() -> None:
            for _ in range(one_at_a_time):
                q.send(body)

        def send_many() -> None:
            for start in range(0, n, SEND_MANY):
                q.send_many([body] * min(SEND_MANY, n - start))

        def consume(count: int) -> Callable[[], None]:
            def run() -> None:
                with q.consume(prefetch=PREFETCH) as sub:
                    for _ in range(count):
                        sub.receive(timeout=30).ack()

            return run

        rates["send (one at a time)"] = timed(one_at_a_time, send_one_at_a_time)
        consume(one_at_a_time)()
        rates["send (send_many)"] = timed(n, send_many)
        rates["consume (subscription, ack each)"] = timed(n, consume(n))
        q.delete()
    return rates


def best_of(repeat: int, measure: Callable[[bytes], Rates], body: bytes) -> Rates:
    best: Rates = {}
    for _ in range(repeat):
        for operation, rate in measure(body).items():
            best[operation] = max(rate, best.get(operation, 0.0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per client; the best counts")
    args = parser.parse_args()
    bench = Bench(args.url, args.messages)
    clients: dict[str, Callable[[bytes], Rates]] = {
        "raw redis-py": lambda body: raw(bench, body),
        "polybus aio": lambda body: asyncio.run(polybus_aio(bench, body)),
        "polybus blocking": lambda body: polybus_blocking(bench, body),
        "kombu redis": lambda body: kombu_redis(bench, body),
    }
    try:
        for size in (1024, 10 * 1024):
            body = os.urandom(size)
            rates = {client: best_of(args.repeat, run, body) for client, run in clients.items()}
            print_table(rates, size, args.messages, args.repeat)
    finally:
        bench.cleanup()


def print_table(rates: dict[str, Rates], size: int, messages: int, repeat: int) -> None:
    raw_rates, kombu_rates = rates["raw redis-py"], rates["kombu redis"]
    print(f"\n{size // 1024} KB bodies, {messages} messages, prefetch {PREFETCH}, best of {repeat}")
    print(f"{'client':18} {'operation':38} {'msg/s':>9} {'÷ raw':>7} {'÷ kombu':>8}")
    for client, operations in rates.items():
        for operation, rate in operations.items():
            kind = operation.split(" ")[0]  # send or consume
            print(
                f"{client:18} {operation:38} {rate:9.0f} {rate / raw_rates[kind]:7.2f}"
                f" {rate / kombu_rates[kind]:8.1f}"
            )


if __name__ == "__main__":
    main()
