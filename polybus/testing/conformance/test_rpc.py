"""RPC: correlated replies, many in flight, timeouts, remote errors, shared servers, cast."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time

import pytest

from polybus import RemoteError, RpcTimeout


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


async def test_call_returns_the_reply(connect):
    server = await connect()
    await server.rpc("rpc_queue").serve(fib)
    client = await connect()
    assert await client.rpc("rpc_queue").call(30, timeout=10) == 832040


async def test_two_hundred_concurrent_calls_each_get_their_own_reply(connect):
    # Given a server that answers slowly enough for calls to overlap, out of order
    server = await connect()

    async def echo(body):
        await asyncio.sleep(0.001 * (body["i"] % 7))
        return body

    await server.rpc("echo").serve(echo, concurrency=8)
    clients = [await connect() for _ in range(2)]
    # When 200 calls are made at once, from two buses, many tasks and (blocking API) threads
    calls = [
        clients[i % 2].rpc("echo").call({"i": i, "pad": "x" * (i % 5)}, timeout=30)
        for i in range(200)
    ]
    replies = await asyncio.gather(*calls)
    # Then every caller got exactly its own reply
    assert [r["i"] for r in replies] == list(range(200))
    assert all(r["pad"] == "x" * (r["i"] % 5) for r in replies)


async def test_calls_from_several_threads_share_one_bus(connect):
    server = await connect()
    await server.rpc("double").serve(lambda n: n * 2, concurrency=4)
    client = await connect()
    rpc = client.rpc("double")
    loop = asyncio.get_running_loop()
    results: dict[int, int] = {}

    def caller(start: int) -> None:
        for i in range(start, start + 10):
            results[i] = asyncio.run_coroutine_threadsafe(rpc.call(i, timeout=20), loop).result()

    threads = [threading.Thread(target=caller, args=(n * 10,)) for n in range(5)]
    for thread in threads:
        thread.start()

    def join_all() -> None:
        for thread in threads:
            thread.join()

    await asyncio.get_running_loop().run_in_executor(None, join_all)
    assert results == {i: i * 2 for i in range(50)}


async def test_call_times_out_and_a_late_reply_is_discarded(connect):
    server = await connect()
    slow_done = threading.Event()

    def slow(body):
        if body == "slow":
            time.sleep(0.8)
            slow_done.set()
        return body

    await server.rpc("sluggish").serve(slow)
    client = await connect()
    rpc = client.rpc("sluggish")
    started = time.monotonic()
    with pytest.raises(RpcTimeout):
        await rpc.call("slow", timeout=0.3)
    assert time.monotonic() - started < 0.8 + 0.5
    await asyncio.get_running_loop().run_in_executor(None, slow_done.wait, 5)
    # the late reply to "slow" must not be taken for the next call's reply
    assert await rpc.call("fast", timeout=10) == "fast"


async def test_handler_exception_reaches_the_caller_as_remote_error(connect):
    server = await connect()

    def divide(body):
        return body["a"] / body["b"]

    await server.rpc("divide").serve(divide)
    client = await connect()
    with pytest.raises(RemoteError) as caught:
        await client.rpc("divide").call({"a": 1, "b": 0}, timeout=10)
    error = caught.value
    assert error.type_name == "ZeroDivisionError"
    assert "division by zero" in error.remote_message
    assert "def divide" in error.remote_traceback or "divide" in error.remote_traceback
    # and the server keeps serving
    assert await client.rpc("divide").call({"a": 6, "b": 3}, timeout=10) == 2.0


async def test_several_servers_share_the_calls(connect):
    served_by: list[str] = []
    for name in ("s1", "s2"):
        server = await connect()

        def handler(body, name=name):
            served_by.append(name)
            time.sleep(0.02)
            return body

        await server.rpc("shared").serve(handler)
    client = await connect()
    rpc = client.rpc("shared")
    assert await asyncio.gather(*(rpc.call(i, timeout=20) for i in range(20))) == list(range(20))
    assert set(served_by) == {"s1", "s2"}


async def test_request_of_a_server_that_dies_mid_call_is_answered_by_another(connect, target):
    # Given a server that takes a request and dies before replying
    doomed = await connect()
    taken = threading.Event()
    release = threading.Event()

    def stuck(body):
        taken.set()
        release.wait(10)
        return "from the dead"

    await doomed.rpc("fragile").serve(stuck)
    client = await connect()
    call = asyncio.ensure_future(client.rpc("fragile").call("work", timeout=30))
    await asyncio.get_running_loop().run_in_executor(None, taken.wait, 10)
    await target.crash(doomed)
    release.set()
    # When a healthy server starts
    healthy = await connect()
    await healthy.rpc("fragile").serve(lambda body: f"done {body}")
    # Then the caller gets the healthy server's answer
    assert await call == "done work"


async def test_cast_delivers_a_request_without_waiting_for_a_reply(connect):
    server = await connect()
    received: asyncio.Queue[object] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def record(body):
        loop.call_soon_threadsafe(received.put_nowait, body)
        return "ignored"

    await server.rpc("fire_and_forget").serve(record)
    client = await connect()
    await client.rpc("fire_and_forget").cast({"event": "ping"})
    assert await asyncio.wait_for(received.get(), 10) == {"event": "ping"}


async def test_call_waits_for_a_server_that_starts_later(connect):
    client = await connect()
    call = asyncio.ensure_future(client.rpc("late_server").call(10, timeout=20))
    await asyncio.sleep(0.3)
    server = await connect()
    await server.rpc("late_server").serve(fib)
    assert await call == 55


async def test_a_decorated_function_serves_calls(connect):
    server = await connect()
    rpc = server.rpc("decorated")
    decorator = rpc.handler
    handled = decorator(lambda n: n * 3)
    if inspect.isawaitable(handled):  # the blocking API, seen through the test's adapter
        handled = await handled
    client = await connect()
    assert await client.rpc("decorated").call(14, timeout=10) == 42
    assert handled(1) == 3
