"""Raw nats-py, the way its documentation writes each pattern: a JetStream work-queue stream
(file storage, like the nats:// transport's durable queues) published to with many acks in
flight and read by a durable pull consumer in batches with an ack each; RPC as a plain NATS
request and reply (``nc.request`` to a subscriber that answers).

``NatsDurableRpcSuite`` is RPC the way polybus does it on NATS, by hand: the request published
into a work-queue stream (it outlives a server that dies before answering), pulled by the
server, answered with a plain publish to the caller's subject, then acked. It shows what the
durability costs beside plain request/reply."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

from polybus.bench.model import BATCH, TIMEOUT, Measurement, Plan, Unreachable

_names = itertools.count(1)
IN_FLIGHT = 1000


class NatsSuite:
    client = "nats-py"
    raw = True
    patterns = frozenset({"workqueue", "rpc"})

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url.split("?", 1)[0]
        self.namespace = namespace.replace(".", "-")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.nc: Any = None

    def open(self) -> None:
        try:
            import nats
        except ImportError as exc:
            raise Unreachable("nats-py is not installed: pip install nats-py") from exc
        self.loop = asyncio.new_event_loop()
        try:
            self.nc = self.loop.run_until_complete(
                asyncio.wait_for(nats.connect(self.url, allow_reconnect=False), TIMEOUT)
            )
        except Exception as exc:
            self.close()
            raise Unreachable(f"{type(exc).__name__}: {exc!r}") from exc

    def run(self, pattern: str, size: int, plan: Plan) -> list[Measurement]:
        assert self.loop is not None, "run() before open()"
        work = self._rpc(size, plan) if pattern == "rpc" else self._workqueue(size, plan)
        return self.loop.run_until_complete(work)

    async def _workqueue(self, size: int, plan: Plan) -> list[Measurement]:
        from nats.js import api

        js = self.nc.jetstream()
        name = f"raw-{self.namespace}-wq{size}-{next(_names)}"
        subject = f"raw.{name}"
        await js.add_stream(
            api.StreamConfig(
                name=name,
                subjects=[subject],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
            )
        )
        body = os.urandom(size)
        pull = await js.pull_subscribe(subject, durable="raw", stream=name)

        async def send(count: int) -> None:
            for start in range(0, count, IN_FLIGHT):
                window = min(IN_FLIGHT, count - start)
                await asyncio.gather(*(js.publish(subject, body) for _ in range(window)))

        async def consume(count: int) -> None:
            received = 0
            while received < count:
                for msg in await pull.fetch(min(BATCH, count - received), timeout=TIMEOUT):
                    await msg.ack()
                    received += 1

        try:
            await send(plan.warmup)
            await consume(plan.warmup)
            started = time.perf_counter()
            await send(plan.messages)
            sent = time.perf_counter()
            await consume(plan.messages)
            consumed = time.perf_counter()
            for _ in range(plan.each):
                await js.publish(subject, body)
            sent_each = time.perf_counter()
            await consume(plan.each)
        finally:
            await pull.unsubscribe()
            await js.delete_stream(name)
        return [
            Measurement(
                "workqueue-send", plan.messages, sent - started, f"{IN_FLIGHT} acks in flight"
            ),
            Measurement("workqueue-send-each", plan.each, sent_each - consumed, "await each"),
            Measurement(
                "workqueue-consume", plan.messages, consumed - sent, f"fetch {BATCH}, ack each"
            ),
        ]

    async def _rpc(self, size: int, plan: Plan) -> list[Measurement]:
        subject = f"raw.{self.namespace}.rpc{size}.{next(_names)}"

        async def answer(msg: Any) -> None:
            await msg.respond(msg.data)

        server = await self.nc.subscribe(subject, cb=answer)
        body = os.urandom(size)
        latencies: list[float] = []
        try:
            for _ in range(plan.warmup):
                await self.nc.request(subject, body, timeout=TIMEOUT)
            started = time.perf_counter()
            for _ in range(plan.rpc):
                called = time.perf_counter()
                await self.nc.request(subject, body, timeout=TIMEOUT)
                latencies.append(time.perf_counter() - called)
            seconds = time.perf_counter() - started
        finally:
            await server.unsubscribe()
        return [
            Measurement("rpc-seq", plan.rpc, seconds, "request/reply, one at a time", latencies)
        ]

    def close(self) -> None:
        loop = self.loop
        if loop is None:
            return
        if self.nc is not None:
            loop.run_until_complete(self.nc.close())
        loop.close()
        self.loop = None


class NatsDurableRpcSuite(NatsSuite):
    client = "nats-py-durable"
    raw = False  # the ratio's denominator stays plain request/reply
    patterns = frozenset({"rpc"})

    async def _rpc(self, size: int, plan: Plan) -> list[Measurement]:
        from nats.js import api

        js = self.nc.jetstream()
        name = f"raw-{self.namespace}-drpc{size}-{next(_names)}"
        subject, replies = f"raw.{name}", self.nc.new_inbox()
        await js.add_stream(
            api.StreamConfig(
                name=name,
                subjects=[subject],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.MEMORY,
            )
        )
        pull = await js.pull_subscribe(subject, durable="server", stream=name)
        waiting: dict[str, asyncio.Future[bytes]] = {}

        async def serve() -> None:
            while True:
                try:
                    requests = await pull.fetch(BATCH, timeout=1)
                except Exception:  # a fetch that found nothing: ask again
                    continue
                for msg in requests:
                    headers = {"Id": msg.headers["Id"]}
                    await self.nc.publish(msg.headers["Reply"], msg.data, headers=headers)
                    await msg.ack()

        async def on_reply(msg: Any) -> None:
            future = waiting.pop(msg.headers["Id"], None)
            if future is not None:
                future.set_result(msg.data)

        answers = await self.nc.subscribe(replies, cb=on_reply)
        server = asyncio.ensure_future(serve())
        body, ids = os.urandom(size), itertools.count()

        async def call() -> None:
            key = str(next(ids))
            waiting[key] = asyncio.get_running_loop().create_future()
            await self.nc.publish(subject, body, headers={"Reply": replies, "Id": key})
            await asyncio.wait_for(waiting[key], TIMEOUT)

        latencies: list[float] = []
        try:
            for _ in range(plan.warmup):
                await call()
            started = time.perf_counter()
            for _ in range(plan.rpc):
                called = time.perf_counter()
                await call()
                latencies.append(time.perf_counter() - called)
            seconds = time.perf_counter() - started
        finally:
            server.cancel()
            await answers.unsubscribe()
            await pull.unsubscribe()
            await js.delete_stream(name)
        mode = "request in a work-queue stream, pulled, answered, acked"
        return [Measurement("rpc-seq", plan.rpc, seconds, mode, latencies)]
