"""Interop: plain pika programs (the RabbitMQ tutorials' code) and polybus share queues and
exchanges.

Tutorial programs declare classic queues without dead-letter arguments and non-durable
exchanges; polybus uses them as they are with ``declare=False``. Declaring them polybus's way
instead is a ``DeclarationConflict`` that names the option, both values and the fix.
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
    # When a polybus consumer reads the same queue, as the tutorial declared it
    async with polybus.aio.connect(url) as bus:
        q = bus.work_queue("task_queue", declare=False)
        async with q.consume() as sub:
            got = []
            for _ in range(2):
                msg = await sub.receive(timeout=10)
                got.append((msg.body, msg.persistent, msg.redelivered))
                await msg.ack()
    # Then it gets the raw bytes, persistent, in order
    assert got == [(b"First.", True, False), (b"Second..", True, False)]


async def test_polybus_sender_to_tutorial_worker(url, pika_url, namespace):
    # Given the tutorial's queue, and messages sent to it with polybus, with properties
    await asyncio.to_thread(tutorial_new_task, pika_url, f"{namespace}.task_queue", [])
    async with polybus.aio.connect(url) as bus:
        q = bus.work_queue("task_queue", declare=False)
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


def tutorial_declarations(url: str, namespace: str) -> None:
    """What the tutorials declare: hello.py's queue, new_task.py's durable queue, and the
    exchanges of emit_log.py, emit_log_direct.py and emit_log_topic.py (none durable)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(queue=f"{namespace}.hello")
    channel.queue_declare(queue=f"{namespace}.task_queue", durable=True)
    channel.exchange_declare(exchange=f"{namespace}.logs", exchange_type="fanout")
    channel.exchange_declare(exchange=f"{namespace}.direct_logs", exchange_type="direct")
    channel.exchange_declare(exchange=f"{namespace}.topic_logs", exchange_type="topic")
    connection.close()


async def test_polybus_joins_every_topology_the_tutorials_declare(url, pika_url, namespace):
    # Given the queues and exchanges declared the tutorials' way
    await asyncio.to_thread(tutorial_declarations, pika_url, namespace)
    async with polybus.aio.connect(url) as bus:
        # When polybus uses each as it exists
        for name in ("hello", "task_queue"):
            q = bus.work_queue(name, declare=False)
            await q.send(f"to {name}")
            async with q.consume() as sub:
                msg = await sub.receive(timeout=10)
                await msg.ack()
            assert msg.body == f"to {name}"
        logs = bus.pubsub("logs", declare=False)
        direct = bus.router("direct_logs", kind="direct", declare=False)
        topics = bus.router("topic_logs", kind="topic", declare=False)
        async with (
            logs.subscribe() as all_logs,
            direct.subscribe(["error"]) as errors,
            topics.subscribe(["kern.*"]) as kern,
        ):
            await logs.publish("info: hi")
            await direct.publish("disk", key="error")
            await topics.publish("panic", key="kern.critical")
            got = [(await s.receive(timeout=10)).body for s in (all_logs, errors, kern)]
        # Then every pattern works on them
        assert got == ["info: hi", "disk", "panic"]
        # And declaring them polybus's way says what differs and how to match it
        with pytest.raises(DeclarationConflict, match=r"durable=False.*declare=False"):
            await bus.work_queue("hello", dead_letter=None).declare()
        async with polybus.aio.connect(f"{url}&queue_type=classic") as classic:
            with pytest.raises(DeclarationConflict, match="dead_letter"):
                await classic.work_queue("task_queue").declare()
        with pytest.raises(DeclarationConflict, match="durable=False"):
            await bus.router("topic_logs", kind="topic").declare()
        # while declaring them as they are works
        await bus.router("topic_logs", kind="topic", durable=False).declare()
        await bus.work_queue("hello", durable=False, dead_letter=None).declare()
