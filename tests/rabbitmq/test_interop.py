"""Interop: plain pika programs (the RabbitMQ tutorials' code) and polybus share queues.

Tutorial programs declare classic queues, so polybus joins them with ``?queue_type=classic``;
without it, the mismatch is a ``DeclarationConflict`` that names the fix.
"""

from __future__ import annotations

import asyncio
import json

import pika
import pytest

import polybus.aio
from polybus import DeclarationConflict


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def tutorial_new_task(url: str, queue: str, messages: list[str]) -> None:
    """Tutorial 2's new_task.py: durable queue, persistent messages."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(queue=queue, durable=True)
    for message in messages:
        channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=message,
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
        )
    connection.close()


def tutorial_worker(url: str, queue: str, count: int) -> list[tuple[bytes, pika.BasicProperties]]:
    """Tutorial 2's worker.py: fair dispatch, manual acks; stops after ``count`` messages."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(queue=queue, durable=True)
    channel.basic_qos(prefetch_count=1)
    got: list[tuple[bytes, pika.BasicProperties]] = []

    def callback(ch, method, properties, body):
        got.append((body, properties))
        ch.basic_ack(delivery_tag=method.delivery_tag)
        if len(got) == count:
            ch.stop_consuming()

    channel.basic_consume(queue=queue, on_message_callback=callback)
    connection.call_later(20, channel.stop_consuming)
    channel.start_consuming()
    connection.close()
    return got


def tutorial_rpc_client(url: str, queue: str, numbers: list[int]) -> list[int]:
    """Tutorial 6's rpc_client.py: exclusive reply queue, correlation ids."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    callback_queue = channel.queue_declare(queue="", exclusive=True).method.queue
    responses: dict[str, bytes] = {}

    def on_response(ch, method, props, body):
        responses[props.correlation_id] = body

    channel.basic_consume(queue=callback_queue, on_message_callback=on_response, auto_ack=True)
    answers = []
    for n in numbers:
        corr_id = f"call-{n}"
        channel.basic_publish(
            exchange="",
            routing_key=queue,
            properties=pika.BasicProperties(reply_to=callback_queue, correlation_id=corr_id),
            body=str(n),
        )
        while corr_id not in responses:
            connection.process_data_events(time_limit=1)
        answers.append(int(responses.pop(corr_id)))
    connection.close()
    return answers


async def test_tutorial_publisher_to_polybus_worker(url, pika_url, namespace):
    # Given messages sent by the tutorial's new_task.py
    queue = f"{namespace}.task_queue"
    await asyncio.to_thread(tutorial_new_task, pika_url, queue, ["First.", "Second.."])
    # When a polybus consumer reads the same queue (classic, as the tutorial declared it)
    async with polybus.aio.connect(f"{url}&queue_type=classic") as bus:
        q = bus.work_queue("task_queue", dead_letter=None)
        async with q.consume() as sub:
            got = []
            for _ in range(2):
                msg = await sub.receive(timeout=10)
                got.append((msg.body, msg.persistent, msg.redelivered))
                await msg.ack()
    # Then it gets the raw bytes, persistent, in order
    assert got == [(b"First.", True, False), (b"Second..", True, False)]


async def test_polybus_sender_to_tutorial_worker(url, pika_url, namespace):
    # Given messages sent with polybus, with properties
    async with polybus.aio.connect(f"{url}&queue_type=classic") as bus:
        q = bus.work_queue("task_queue", dead_letter=None)
        await q.send({"job": 1}, headers={"trace": "t-1"}, message_id="m-1")
        await q.send(b"raw")
    # When the tutorial's worker.py consumes them
    got = await asyncio.to_thread(tutorial_worker, pika_url, f"{namespace}.task_queue", 2)
    # Then it sees plain AMQP: the JSON bytes, its content type, headers, ids, persistence
    (body, props), (raw, _) = got
    assert json.loads(body) == {"job": 1}
    assert props.content_type == "application/json"
    assert props.headers["trace"] == "t-1"
    assert props.message_id == "m-1"
    assert props.delivery_mode == 2
    assert isinstance(props.timestamp, int)
    assert raw == b"raw"


async def test_quorum_default_names_the_fix_for_a_tutorial_classic_queue(url, pika_url, namespace):
    await asyncio.to_thread(tutorial_new_task, pika_url, f"{namespace}.legacy", [])
    async with polybus.aio.connect(url) as bus:
        with pytest.raises(DeclarationConflict, match="queue_type=classic"):
            await bus.work_queue("legacy", dead_letter=None).declare()
        # and the bus stays usable
        await bus.work_queue("fresh").send("ok")
        assert await bus.work_queue("fresh").size() == 1


async def test_tutorial_rpc_client_gets_answers_from_a_polybus_server(url, pika_url, namespace):
    async with polybus.aio.connect(url) as bus:
        # the tutorial sends str(n) without a content type: the handler gets bytes
        await bus.rpc("rpc_queue").serve(lambda body: fib(int(body)))
        answers = await asyncio.to_thread(
            tutorial_rpc_client, pika_url, f"{namespace}.rpc_queue", [1, 10, 30]
        )
    assert answers == [1, 55, 832040]
