"""redis-py on Redis Streams, the way the redis:// transport stores queues: pipelined XADD,
then XREADGROUP COUNT 100 and one XACK per batch."""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

from polybus.bench.model import BATCH, TIMEOUT, Measurement, Plan, Unreachable

_names = itertools.count(1)
GROUP = "bench"


def _client(url: str) -> Any:
    try:
        import redis
    except ImportError as exc:
        raise Unreachable("redis-py is not installed: pip install 'polybus[redis]'") from exc
    return redis.Redis.from_url(url.split("?", 1)[0], socket_connect_timeout=2, socket_timeout=60)


def durability(url: str) -> str:
    """``CONFIG GET appendonly / appendfsync / save``: what a restart keeps."""
    try:
        client = _client(url)
        config = {
            key: client.config_get(key).get(key, "?") for key in ("appendonly", "appendfsync")
        }
        save = client.config_get("save").get("save", "?")
        client.close()
    except Unreachable as exc:
        return f"unknown ({exc})"
    except Exception as exc:  # any redis-py error: the settings are just not known
        return f"unknown ({type(exc).__name__}: {exc})"
    return f"appendonly={config['appendonly']} appendfsync={config['appendfsync']} save={save!r}"


class RedisStreamsSuite:
    client = "redis-py"
    raw = True
    patterns = frozenset({"workqueue"})

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace
        self.redis: Any = None

    def open(self) -> None:
        client = _client(self.url)
        try:
            client.ping()
        except Exception as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
        self.redis = client

    def run(self, pattern: str, size: int, plan: Plan) -> list[Measurement]:
        stream = f"{self.namespace}.raw.wq{size}.{next(_names)}"
        body = os.urandom(size)
        self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        try:
            self._send(stream, body, plan.warmup)
            self._consume(stream, plan.warmup)
            started = time.perf_counter()
            self._send(stream, body, plan.messages)
            sent = time.perf_counter()
            self._consume(stream, plan.messages)
            consumed = time.perf_counter()
            for _ in range(plan.each):
                self.redis.xadd(stream, {"body": body})
            sent_each = time.perf_counter()
            self._consume(stream, plan.each)
        finally:
            self.redis.delete(stream)
        return [
            Measurement(
                "workqueue-send", plan.messages, sent - started, f"pipelined XADD x {BATCH}"
            ),
            Measurement("workqueue-send-each", plan.each, sent_each - consumed, "XADD each"),
            Measurement(
                "workqueue-consume",
                plan.messages,
                consumed - sent,
                f"XREADGROUP COUNT {BATCH} + XACK",
            ),
        ]

    def _send(self, stream: str, body: bytes, count: int) -> None:
        for start in range(0, count, BATCH):
            pipe = self.redis.pipeline(transaction=False)
            for _ in range(min(BATCH, count - start)):
                pipe.xadd(stream, {"body": body})
            pipe.execute()

    def _consume(self, stream: str, count: int) -> None:
        received = 0
        while received < count:
            reply = self.redis.xreadgroup(
                GROUP, "c1", {stream: ">"}, count=BATCH, block=int(TIMEOUT * 1000)
            )
            if not reply:
                raise TimeoutError(f"no message on {stream} within {TIMEOUT}s")
            ids = [entry_id for entry_id, _fields in reply[0][1]]
            self.redis.xack(stream, GROUP, *ids)
            received += len(ids)

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()
