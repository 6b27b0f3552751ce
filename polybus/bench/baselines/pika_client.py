"""pika's BlockingConnection with publisher confirms — the classic RabbitMQ tutorial client — on
the same kind of queue the amqp:// transport declares (a durable quorum queue); and the
tutorial's RPC: a pika client against a pika server (on a thread, a connection of its own)."""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from typing import Any

from polybus.bench.model import BATCH, TIMEOUT, Measurement, Plan, Unreachable

_names = itertools.count(1)
QUORUM = {"x-queue-type": "quorum"}


class PikaSuite:
    client = "pika"
    raw = True
    patterns = frozenset({"workqueue", "rpc"})

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url.split("?", 1)[0]
        self.namespace = namespace
        self.connection: Any = None
        self.channel: Any = None

    def _connect(self) -> Any:
        parameters = self.pika.URLParameters(self.url)
        parameters.socket_timeout = 2
        return self.pika.BlockingConnection(parameters)

    def open(self) -> None:
        try:
            import pika
        except ImportError as exc:
            raise Unreachable("pika is not installed: pip install 'polybus[rabbitmq]'") from exc
        self.pika = pika
        try:
            self.connection = self._connect()
        except Exception as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc!r}") from exc
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def run(self, pattern: str, size: int, plan: Plan) -> list[Measurement]:
        if pattern == "rpc":
            return self._rpc(size, plan)
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
        mode = "basic_publish, confirm each"  # BlockingConnection waits for every confirm
        return [
            Measurement("workqueue-send", plan.messages, sent - started, mode),
            Measurement("workqueue-send-each", plan.messages, sent - started, mode),
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

    def _rpc(self, size: int, plan: Plan) -> list[Measurement]:
        """The tutorial's RPC: requests on a queue, replies on the client's exclusive queue,
        matched by correlation id; the server acks after replying."""
        queue = f"{self.namespace}.raw.rpc{size}.{next(_names)}"
        server = _EchoServer(self._connect(), queue)
        server.start()
        connection = self._connect()
        channel = connection.channel()
        replies = channel.queue_declare("", exclusive=True).method.queue
        body = os.urandom(size)
        answers: dict[str, bytes] = {}

        def on_reply(_channel: Any, _method: Any, properties: Any, reply: bytes) -> None:
            answers[properties.correlation_id] = reply

        channel.basic_consume(replies, on_reply, auto_ack=True)

        def call() -> None:
            correlation = uuid.uuid4().hex
            properties = self.pika.BasicProperties(reply_to=replies, correlation_id=correlation)
            channel.basic_publish("", queue, body, properties)
            deadline = time.monotonic() + TIMEOUT
            while correlation not in answers:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no reply on {queue} within {TIMEOUT}s")
                connection.process_data_events(time_limit=TIMEOUT)
            del answers[correlation]

        latencies: list[float] = []
        try:
            for _ in range(plan.warmup):
                call()
            started = time.perf_counter()
            for _ in range(plan.rpc):
                called = time.perf_counter()
                call()
                latencies.append(time.perf_counter() - called)
            seconds = time.perf_counter() - started
        finally:
            connection.close()
            server.stop()
        return [Measurement("rpc-seq", plan.rpc, seconds, "one call at a time", latencies)]

    def close(self) -> None:
        if self.connection is not None and self.connection.is_open:
            self.connection.close()


class _EchoServer(threading.Thread):
    """The tutorial's rpc_server.py, answering with the request's body."""

    def __init__(self, connection: Any, queue: str) -> None:
        super().__init__(name="pika-rpc-server", daemon=True)
        self.connection = connection
        self.queue = queue
        self.channel = connection.channel()
        self.channel.queue_declare(queue)
        self.channel.basic_qos(prefetch_count=1)
        self.channel.basic_consume(queue, self._on_request)

    def _on_request(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        import pika

        reply = pika.BasicProperties(correlation_id=properties.correlation_id)
        channel.basic_publish("", properties.reply_to, body, reply)
        channel.basic_ack(method.delivery_tag)

    def run(self) -> None:
        self.channel.start_consuming()

    def stop(self) -> None:
        self.connection.add_callback_threadsafe(self.channel.stop_consuming)
        self.join(TIMEOUT)
        self.channel.queue_delete(self.queue)
        self.connection.close()
