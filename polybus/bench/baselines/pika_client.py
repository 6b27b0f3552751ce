"""pika's BlockingConnection with publisher confirms: the classic RabbitMQ tutorial client,
on the same kind of queue the amqp:// transport declares (durable quorum queue)."""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

from polybus.bench.model import BATCH, TIMEOUT, Measurement, Plan, Unreachable

_names = itertools.count(1)
QUORUM = {"x-queue-type": "quorum"}


class PikaSuite:
    client = "pika"
    raw = True
    patterns = frozenset({"workqueue"})

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url.split("?", 1)[0]
        self.namespace = namespace
        self.connection: Any = None
        self.channel: Any = None

    def open(self) -> None:
        try:
            import pika
        except ImportError as exc:
            raise Unreachable("pika is not installed: pip install 'polybus[rabbitmq]'") from exc
        self.pika = pika
        try:
            parameters = pika.URLParameters(self.url)
            parameters.socket_timeout = 2
            self.connection = pika.BlockingConnection(parameters)
        except Exception as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc!r}") from exc
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def run(self, pattern: str, size: int, plan: Plan) -> list[Measurement]:
        queue = f"{self.namespace}.raw.wq{size}.{next(_names)}"
        body = os.urandom(size)
        self.channel.queue_declare(queue, durable=True, arguments=QUORUM)
        try:
            self._send(queue, body, plan.warmup)
            self._consume(queue, plan.warmup)
            started = time.perf_counter()
            self._send(queue, body, plan.messages)
            sent = time.perf_counter()
            self._consume(queue, plan.messages)
            consumed = time.perf_counter()
        finally:
            self.channel.queue_delete(queue)
        return [
            Measurement(
                "workqueue-send", plan.messages, sent - started, "basic_publish, confirm each"
            ),
            Measurement(
                "workqueue-consume", plan.messages, consumed - sent, f"prefetch {BATCH}, ack each"
            ),
        ]

    def _send(self, queue: str, body: bytes, count: int) -> None:
        persistent = self.pika.BasicProperties(delivery_mode=2)
        for _ in range(count):
            self.channel.basic_publish("", queue, body, persistent)

    def _consume(self, queue: str, count: int) -> None:
        channel = self.channel
        channel.basic_qos(prefetch_count=BATCH)
        deliveries = channel.consume(queue, inactivity_timeout=TIMEOUT)
        for received, (method, _properties, _body) in enumerate(deliveries, 1):
            if method is None:
                raise TimeoutError(f"no message on {queue} within {TIMEOUT}s")
            channel.basic_ack(method.delivery_tag)
            if received == count:
                break
        channel.cancel()

    def close(self) -> None:
        if self.connection is not None and self.connection.is_open:
            self.connection.close()
