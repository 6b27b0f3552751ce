"""kombu, the library Celery sends through, on Redis (its list-based emulation) and on RabbitMQ
(py-amqp with publisher confirms, on a durable quorum queue like the amqp:// transport's)."""

from __future__ import annotations

import importlib
import itertools
import os
import time
from typing import Any

from polybus.bench.model import BATCH, TIMEOUT, Measurement, Plan, Unreachable

_names = itertools.count(1)


class KombuSuite:
    client = "kombu"
    raw = False
    patterns = frozenset({"workqueue"})

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url.split("?", 1)[0]
        self.amqp = self.url.startswith("amqp")
        self.namespace = namespace
        self.connection: Any = None

    def open(self) -> None:
        try:
            kombu: Any = importlib.import_module("kombu")  # untyped calls: checked by the run
        except ImportError as exc:
            raise Unreachable("kombu is not installed: pip install kombu") from exc
        self.kombu = kombu
        options = {"confirm_publish": True} if self.amqp else {}
        connection = kombu.Connection(self.url, transport_options=options, connect_timeout=2)
        try:
            connection.ensure_connection(max_retries=1)
        except Exception as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
        self.connection = connection

    def run(self, pattern: str, size: int, plan: Plan) -> list[Measurement]:
        kombu = self.kombu
        name = f"{self.namespace}.raw.kwq{size}.{next(_names)}"
        exchange = kombu.Exchange(name, type="direct", durable=True)
        arguments = {"x-queue-type": "quorum"} if self.amqp else None
        queue = kombu.Queue(
            name, exchange, routing_key=name, durable=True, queue_arguments=arguments
        )
        channel = self.connection.default_channel
        queue(channel).declare()
        body = os.urandom(size)
        try:
            self._send(exchange, name, body, plan.warmup)
            self._consume(queue, plan.warmup)
            started = time.perf_counter()
            self._send(exchange, name, body, plan.messages)
            sent = time.perf_counter()
            self._consume(queue, plan.messages)
            consumed = time.perf_counter()
        finally:
            queue(channel).delete()
            exchange(channel).delete()
        confirm = "confirmed " if self.amqp else ""
        seconds = sent - started  # kombu publishes one at a time either way
        return [
            Measurement("workqueue-send", plan.messages, seconds, f"{confirm}publish each"),
            Measurement("workqueue-send-each", plan.messages, seconds, f"{confirm}publish each"),
            Measurement(
                "workqueue-consume", plan.messages, consumed - sent, f"prefetch {BATCH}, ack each"
            ),
        ]

    def _send(self, exchange: Any, key: str, body: bytes, count: int) -> None:
        producer = self.connection.Producer()
        for _ in range(count):
            producer.publish(
                body,
                exchange=exchange,
                routing_key=key,
                delivery_mode=2,
                content_type="application/octet-stream",
                content_encoding="binary",
            )

    def _consume(self, queue: Any, count: int) -> None:
        received = 0

        def on_message(_body: Any, message: Any) -> None:
            nonlocal received
            message.ack()
            received += 1

        with self.connection.Consumer(
            queue, callbacks=[on_message], prefetch_count=BATCH, accept=["application/octet-stream"]
        ):
            while received < count:
                self.connection.drain_events(timeout=TIMEOUT)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.release()
