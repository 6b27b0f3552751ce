"""polybus-on-RabbitMQ beside the raw clients, on the same workload, in one run.

Work queue: N persistent messages (1 KB and 10 KB bodies) into a durable queue with publisher
confirms, then consumed with manual acks and prefetch 100; each client's best of ``--repeat``.
Every client uses the same queue type (``--queue-type``, default quorum: what polybus declares
for durable queues). RPC: sequential calls, each server in its own process. Prints rates,
latencies and the ratios the issue asks for.

    python benchmarks/bench_rabbitmq.py [--messages 20000] [--url amqp://...]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import aio_pika
import kombu
import pika

import polybus
import polybus.aio

PREFETCH = 100


class Bench:
    def __init__(self, url: str, messages: int, queue_type: str) -> None:
        self.url = url
        self.messages = messages
        self.queue_type = queue_type
        self.namespace = f"bench{os.urandom(3).hex()}"
        self.arguments = {"x-queue-type": queue_type}

    def polybus_url(self) -> str:
        return f"{self.url}?namespace={self.namespace}&queue_type={self.queue_type}"

    def queue(self, client: str, size: int) -> str:
        return f"{self.namespace}.{client}-{size}"

    def declare(self, queue: str) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        connection.channel().queue_declare(queue, durable=True, arguments=self.arguments)
        connection.close()

    def delete(self, queue: str) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        connection.channel().queue_delete(queue)
        connection.close()


def rate(count: int, started: float) -> float:
    return count / (time.perf_counter() - started)


# -- senders: each returns messages/s --------------------------------------------------------


def polybus_aio_send(bench: Bench, queue: str, body: bytes, count: int) -> float:
    """asyncio API, ``send_many`` in batches of 1000 (each batch pipelined, confirms awaited)."""

    async def run() -> float:
        async with polybus.aio.connect(bench.polybus_url()) as bus:
            q = bus.work_queue(queue.split(".", 1)[1], dead_letter=None)
            await q.declare()
            started = time.perf_counter()
            for start in range(0, count, 1000):
                await q.send_many([body] * min(1000, count - start))
            return rate(count, started)

    return asyncio.run(run())


def polybus_aio_gather_send(bench: Bench, queue: str, body: bytes, count: int) -> float:
    """asyncio API, one ``send`` per message, 1000 in flight at a time."""

    async def run() -> float:
        async with polybus.aio.connect(bench.polybus_url()) as bus:
            q = bus.work_queue(queue.split(".", 1)[1], dead_letter=None)
            await q.declare()
            started = time.perf_counter()
            for start in range(0, count, 1000):
                await asyncio.gather(*(q.send(body) for _ in range(min(1000, count - start))))
            return rate(count, started)

    return asyncio.run(run())


def polybus_blocking_send(bench: Bench, queue: str, body: bytes, count: int) -> float:
    """Blocking API, one message at a time (each waits for its confirm)."""
    with polybus.connect(bench.polybus_url()) as bus:
        q = bus.work_queue(queue.split(".", 1)[1], dead_letter=None)
        q.declare()
        started = time.perf_counter()
        for _ in range(count):
            q.send(body)
        return rate(count, started)


def pika_send(confirms: bool) -> Callable[[Bench, str, bytes, int], float]:
    def send(bench: Bench, queue: str, body: bytes, count: int) -> float:
        connection = pika.BlockingConnection(pika.URLParameters(bench.url))
        channel = connection.channel()
        if confirms:
            channel.confirm_delivery()
        channel.queue_declare(queue, durable=True, arguments=bench.arguments)
        properties = pika.BasicProperties(delivery_mode=2)
        started = time.perf_counter()
        for _ in range(count):
            channel.basic_publish("", queue, body, properties)
        result = rate(count, started)
        connection.close()
        return result

    return send


def aio_pika_send(bench: Bench, queue: str, body: bytes, count: int) -> float:
    """aio-pika with confirms, 1000 publishes in flight at a time."""

    async def run() -> float:
        connection = await aio_pika.connect(bench.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.declare_queue(queue, durable=True, arguments=bench.arguments)
            exchange = channel.default_exchange
            started = time.perf_counter()
            for start in range(0, count, 1000):
                await asyncio.gather(
                    *(
                        exchange.publish(
                            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                            routing_key=queue,
                        )
                        for _ in range(min(1000, count - start))
                    )
                )
            return rate(count, started)

    return asyncio.run(run())


def kombu_send(bench: Bench, queue: str, body: bytes, count: int) -> float:
    """kombu (py-amqp) with confirms, one at a time as kombu publishes."""
    with kombu.Connection(bench.url, transport_options={"confirm_publish": True}) as connection:
        target = kombu.Queue(queue, durable=True, queue_arguments=bench.arguments)
        producer = connection.Producer()
        target(connection.default_channel).declare()
        started = time.perf_counter()
        for _ in range(count):
            producer.publish(body, routing_key=queue, delivery_mode=2, serializer=None)
        return rate(count, started)


# -- consumers: each drains ``count`` messages with manual acks, returns messages/s --------


def polybus_aio_consume(bench: Bench, queue: str, count: int) -> float:
    async def run() -> float:
        async with polybus.aio.connect(bench.polybus_url()) as bus:
            q = bus.work_queue(queue.split(".", 1)[1], dead_letter=None)
            async with q.consume(prefetch=PREFETCH) as sub:
                started = time.perf_counter()
                for _ in range(count):
                    msg = await sub.receive(timeout=30)
                    await msg.ack()
                return rate(count, started)

    return asyncio.run(run())


def pika_consume(bench: Bench, queue: str, count: int) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(bench.url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=PREFETCH)
    seen = 0
    started = time.perf_counter()

    def on_message(ch: Any, method: Any, _properties: Any, _body: bytes) -> None:
        nonlocal seen
        ch.basic_ack(method.delivery_tag)
        seen += 1
        if seen == count:
            ch.stop_consuming()

    channel.basic_consume(queue, on_message)
    channel.start_consuming()
    result = rate(count, started)
    connection.close()
    return result


def aio_pika_consume(bench: Bench, queue: str, count: int) -> float:
    async def run() -> float:
        connection = await aio_pika.connect(bench.url)
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=PREFETCH)
            q = await channel.declare_queue(queue, durable=True, arguments=bench.arguments)
            started = time.perf_counter()
            seen = 0
            async with q.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    seen += 1
                    if seen == count:
                        break
            return rate(count, started)

    return asyncio.run(run())


def kombu_consume(bench: Bench, queue: str, count: int) -> float:
    seen = 0
    with kombu.Connection(bench.url) as connection:
        target = kombu.Queue(queue, durable=True, queue_arguments=bench.arguments)

        def on_message(message: Any) -> None:
            nonlocal seen
            message.ack()
            seen += 1

        with connection.Consumer(target, on_message=on_message, prefetch_count=PREFETCH):
            started = time.perf_counter()
            while seen < count:
                connection.drain_events(timeout=30)
            return rate(count, started)


# -- RPC ----------------------------------------------------------------------------------


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def pika_rpc_server(url: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(queue)
    channel.basic_qos(prefetch_count=1)

    def on_request(ch: Any, method: Any, props: Any, body: bytes) -> None:
        reply = pika.BasicProperties(correlation_id=props.correlation_id)
        ch.basic_publish("", props.reply_to, str(fib(int(body))).encode(), reply)
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(queue, on_request)
    channel.start_consuming()


def polybus_rpc_server(url: str, name: str) -> None:
    async def serve() -> None:
        async with polybus.aio.connect(url) as bus:

            async def handler(n: int) -> int:
                return fib(n)

            await bus.rpc(name).serve(handler)
            await asyncio.Event().wait()

    asyncio.run(serve())


def pika_rpc_calls(url: str, queue: str, calls: int) -> list[float]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    reply_queue = channel.queue_declare("", exclusive=True).method.queue
    replies: dict[str, bytes] = {}

    def on_reply(_ch: Any, _method: Any, props: Any, body: bytes) -> None:
        replies[props.correlation_id] = body

    channel.basic_consume(reply_queue, on_reply, auto_ack=True)
    latencies = []
    for i in range(calls):
        correlation_id = str(i)
        started = time.perf_counter()
        channel.basic_publish(
            "",
            queue,
            b"20",
            pika.BasicProperties(reply_to=reply_queue, correlation_id=correlation_id),
        )
        while correlation_id not in replies:
            connection.process_data_events(time_limit=None)
        assert int(replies.pop(correlation_id)) == 6765
        latencies.append(time.perf_counter() - started)
    connection.close()
    return latencies


def polybus_aio_rpc_calls(url: str, name: str, calls: int) -> list[float]:
    async def run() -> list[float]:
        async with polybus.aio.connect(url) as bus:
            rpc = bus.rpc(name)
            latencies = []
            for _ in range(calls):
                started = time.perf_counter()
                assert await rpc.call(20, timeout=10) == 6765
                latencies.append(time.perf_counter() - started)
            return latencies

    return asyncio.run(run())


def polybus_blocking_rpc_calls(url: str, name: str, calls: int) -> list[float]:
    with polybus.connect(url) as bus:
        rpc = bus.rpc(name)
        latencies = []
        for _ in range(calls):
            started = time.perf_counter()
            assert rpc.call(20, timeout=10) == 6765
            latencies.append(time.perf_counter() - started)
        return latencies


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


# -- the run ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--queue-type", default="quorum", choices=["quorum", "classic"])
    parser.add_argument("--only", choices=["queue", "rpc"], help="run one of the two workloads")
    parser.add_argument("--repeat", type=int, default=3, help="work-queue runs per client")
    args = parser.parse_args()
    bench = Bench(args.url, args.messages, args.queue_type)
    n = args.messages
    senders: dict[str, tuple[Callable[[Bench, str, bytes, int], float], int]] = {
        "polybus aio send_many": (polybus_aio_send, n),
        "polybus aio send x1000 in flight": (polybus_aio_gather_send, n),
        "polybus blocking send, one at a time": (polybus_blocking_send, max(1, n // 10)),
        "pika Blocking + confirms": (pika_send(True), max(1, n // 10)),
        "pika Blocking, no confirms": (pika_send(False), n),
        "aio-pika + confirms x1000 in flight": (aio_pika_send, n),
        "kombu + confirms": (kombu_send, max(1, n // 10)),
    }
    consumers: dict[str, Callable[[Bench, str, int], float]] = {
        "polybus aio send_many": polybus_aio_consume,
        "pika Blocking, no confirms": pika_consume,
        "aio-pika + confirms x1000 in flight": aio_pika_consume,
        "kombu + confirms": kombu_consume,
    }
    if args.only != "rpc":
        work_queue(bench, senders, consumers, args.repeat)
    if args.only != "queue":
        rpc(bench, args.url, args.calls)


def work_queue(
    bench: Bench,
    senders: dict[str, tuple[Callable[[Bench, str, bytes, int], float], int]],
    consumers: dict[str, Callable[[Bench, str, int], float]],
    repeat: int,
) -> None:
    print(
        f"RabbitMQ at {bench.url}, {bench.queue_type} queues, persistent, prefetch {PREFETCH},"
        f" best of {repeat}"
    )
    results: dict[tuple[str, int], tuple[float, float | None]] = {}
    for size in (1024, 10240):
        body = os.urandom(size)
        for client, (send, count) in senders.items():
            sent, got = 0.0, None
            for run in range(repeat):  # the best run: the others are the machine's noise
                # a queue of its own each run: a deleted quorum queue's name is not free at once
                queue = bench.queue(f"{client.split()[0]}{abs(hash(client)) % 1000}-{run}", size)
                bench.declare(queue)
                try:
                    sent = max(sent, send(bench, queue, body, count))
                    consume = consumers.get(client)
                    if consume is not None:
                        got = max(got or 0.0, consume(bench, queue, count))
                finally:
                    bench.delete(queue)
            results[client, size] = (sent, got)
            shown = f"{got:>9,.0f}/s" if got is not None else " " * 11
            print(
                f"{size // 1024:>3} KB  {client:<40} send {sent:>9,.0f}/s  consume {shown}"
                f"  ({count} msgs)",
                flush=True,
            )
    print()
    print("ratios (goal)")
    for size in (1024, 10240):
        ours, _ = results["polybus aio send_many", size]
        in_flight, _ = results["polybus aio send x1000 in flight", size]
        blocking_confirms, _ = results["pika Blocking + confirms", size]
        aiopika, _ = results["aio-pika + confirms x1000 in flight", size]
        _, ours_consume = results["polybus aio send_many", size]
        _, pika_consume_rate = results["pika Blocking, no confirms", size]
        assert ours_consume is not None and pika_consume_rate is not None
        kb = f"{size // 1024:>3} KB"
        for label, ratio, goal in (
            ("send_many / pika Blocking+confirms", ours / blocking_confirms, ">= 3"),
            ("send_many / aio-pika", ours / aiopika, ">= 1.5"),
            ("send x1000 in flight / aio-pika", in_flight / aiopika, ">= 1.5"),
            ("consume / pika", ours_consume / pika_consume_rate, ">= 0.8"),
        ):
            print(f"{kb}  {label:<36} {ratio:5.2f}x ({goal})")


def rpc(bench: Bench, url: str, calls: int, rounds: int = 10) -> None:
    """Sequential calls; the clients take turns in rounds, so load on the machine from other
    work falls on all of them alike."""
    print()
    polybus_url = bench.polybus_url()
    clients: dict[str, tuple[Callable[..., None], Callable[..., list[float]], str, str]] = {
        "pika": (pika_rpc_server, pika_rpc_calls, url, f"{bench.namespace}.rpc"),
        "polybus aio": (polybus_rpc_server, polybus_aio_rpc_calls, polybus_url, "rpc2"),
        "polybus blocking": (polybus_rpc_server, polybus_blocking_rpc_calls, polybus_url, "rpc3"),
    }
    servers = []
    for server, _, target_url, address in clients.values():
        process = multiprocessing.get_context("spawn").Process(
            target=server, args=(target_url, address), daemon=True
        )
        process.start()
        servers.append(process)
    time.sleep(3.0)
    results: dict[str, list[float]] = {client: [] for client in clients}
    for _ in range(rounds):
        for client, (_, caller, target_url, address) in clients.items():
            results[client] += caller(target_url, address, 20 + calls // rounds)[20:]
    for process in servers:
        process.kill()
        process.join()
    for queue in ("rpc", "rpc2", "rpc3"):
        bench.delete(f"{bench.namespace}.{queue}")
    for client, latencies in results.items():
        print(
            f"RPC  {client:<24} {len(latencies) / sum(latencies):>7,.0f} calls/s  "
            f"p50 {percentile(latencies, 50) * 1e6:>6.0f} us  p99 "
            f"{percentile(latencies, 99) * 1e6:>6.0f} us"
        )
    pika_p50 = percentile(results["pika"], 50)
    for client in ("polybus aio", "polybus blocking"):
        ratio = percentile(results[client], 50) / pika_p50
        print(f"RPC  {client} p50 / pika p50 {ratio:5.2f}x (<= 1.2)")


if __name__ == "__main__":
    main()
