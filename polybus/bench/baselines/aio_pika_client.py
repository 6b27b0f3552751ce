"""aio-pika with publisher confirms, the asyncio AMQP client: publishes with many confirms in
flight, on the same kind of queue the amqp:// transport declares (a durable quorum queue)."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

from polybus.bench.model import BATCH, TIMEOUT, Measurement, Plan, Unreachable

_names = itertools.count(1)
IN_FLIGHT = 1000


class AioPikaSuite:
    client = "aio-pika"
    raw = False  # the ratio's denominator on RabbitMQ stays pika, the tutorials' client
    patterns = frozenset({"workqueue"})

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url.split("?", 1)[0]
        self.namespace = namespace
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connection: Any = None

    def open(self) -> None:
        try:
            import aio_pika
        except ImportError as exc:
            raise Unreachable("aio-pika is not installed: pip install aio-pika") from exc
        self.aio_pika = aio_pika
        self.loop = asyncio.new_event_loop()
        try:
            self.connection = self.loop.run_until_complete(
                asyncio.wait_for(aio_pika.connect(self.url), TIMEOUT)
            )
        except Exception as exc:
            self.close()
            raise Unreachable(f"{type(exc).__name__}: {exc!r}") from exc

    def run(self, pattern: str, size: int, plan: Plan) -> list[Measurement]:
        assert self.loop is not None, "run() before open()"
        return self.loop.run_until_complete(self._workqueue(size, plan))

    async def _workqueue(self, size: int, plan: Plan) -> list[Measurement]:
        channel = await self.connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=BATCH)
        name = f"{self.namespace}.raw.apwq{size}.{next(_names)}"
        queue = await channel.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        message = self.aio_pika.Message(
            os.urandom(size), delivery_mode=self.aio_pika.DeliveryMode.PERSISTENT
        )
        publish = channel.default_exchange.publish

        async def send(count: int) -> None:
            for start in range(0, count, IN_FLIGHT):
                window = min(IN_FLIGHT, count - start)
                await asyncio.gather(*(publish(message, routing_key=name) for _ in range(window)))

        async def consume(count: int) -> None:
            async with queue.iterator() as messages:
                received = 0
                async for incoming in messages:
                    await incoming.ack()
                    received += 1
                    if received == count:
                        return

        try:
            await send(plan.warmup)
            await consume(plan.warmup)
            started = time.perf_counter()
            await send(plan.messages)
            sent = time.perf_counter()
            await consume(plan.messages)
            consumed = time.perf_counter()
            for _ in range(plan.each):
                await publish(message, routing_key=name)
            sent_each = time.perf_counter()
            await consume(plan.each)
        finally:
            await queue.delete(if_unused=False, if_empty=False)
            await channel.close()
        return [
            Measurement(
                "workqueue-send", plan.messages, sent - started, f"{IN_FLIGHT} confirms in flight"
            ),
            Measurement(
                "workqueue-send-each", plan.each, sent_each - consumed, "publish, await each"
            ),
            Measurement(
                "workqueue-consume", plan.messages, consumed - sent, f"prefetch {BATCH}, ack each"
            ),
        ]

    def close(self) -> None:
        loop = self.loop
        if loop is None:
            return
        if self.connection is not None:
            loop.run_until_complete(self.connection.close())
        loop.close()
        self.loop = None
