"""A message another program sent with a malformed property never stops a consumer: it is
dead-lettered, with the reason, and consumption goes on."""

from __future__ import annotations

import asyncio

import pika
import pytest

import polybus.aio
from polybus.core.headers import DEAD_MESSAGE, DEAD_REASON


def publish_raw(url: str, queue: str, body: bytes, headers: dict[str, object]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().basic_publish(
            "", queue, body, pika.BasicProperties(headers=headers, delivery_mode=2)
        )
    finally:
        connection.close()


@pytest.mark.parametrize("api", ["subscription", "worker"])
async def test_a_poison_header_is_dead_lettered_and_consumption_goes_on(
    url, pika_url, namespace, api
):
    async with polybus.aio.connect(url) as bus:
        # Given a queue holding a message whose delivery count is not a number, then a good one
        q = bus.work_queue("jobs")
        await q.declare()
        publish_raw(pika_url, f"{namespace}.jobs", b'"poison"', {"x-delivery-count": "nope"})
        await q.send("good")
        # When it is consumed
        if api == "worker":
            done = asyncio.Event()
            seen = []

            async def handle(msg: polybus.aio.AsyncMessage) -> None:
                seen.append(msg.body)
                done.set()

            await q.worker(handle)
            await asyncio.wait_for(done.wait(), 15)
        else:
            async with q.consume(prefetch=5) as sub:
                msg = await sub.receive(timeout=15)
                seen = [msg.body]
                await msg.ack()
        # Then the good message arrives, and the poison one waits in the dead-letter queue
        assert seen == ["good"]
        async with bus.work_queue("jobs.dead").consume() as dead:
            msg = await dead.receive(timeout=15)
            await msg.ack()
        assert msg.headers[DEAD_REASON] == "undecodable"
        assert "x-delivery-count" in msg.headers[DEAD_MESSAGE]
