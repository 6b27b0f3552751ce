"""Work queue: waiting, sharing, acks, redelivery, prefetch, order, durability."""

from __future__ import annotations

import asyncio

import pytest

from polybus import ReceiveTimeout


async def test_message_waits_in_queue_until_a_consumer_takes_it(connect):
    # Given a message sent while nobody consumes
    sender = await connect()
    await sender.work_queue("hello").send("Hello World!")
    # When a consumer starts later
    receiver = await connect()
    async with receiver.work_queue("hello").consume() as sub:
        msg = await sub.receive(timeout=5)
        await msg.ack()
    # Then it gets the message
    assert msg.body == "Hello World!"
    assert msg.delivery_count == 1 and not msg.redelivered
