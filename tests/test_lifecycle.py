"""Clean shutdown: no thread or task left behind; signals stop a worker process gracefully."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import polybus
import polybus.aio


def test_closing_a_blocking_bus_leaves_no_thread_behind():
    before = set(threading.enumerate())
    with polybus.connect("memory://lifecycle") as bus:
        q = bus.work_queue("jobs")
        q.worker(lambda msg: None, concurrency=3)
        q.send_many(range(10))
        rpc = bus.rpc("echo")
        rpc.serve(lambda body: body)
        assert rpc.call(1, timeout=5) == 1
        with bus.pubsub("logs").subscribe():
            pass
    leftovers = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert leftovers == []


def test_closing_an_asyncio_bus_leaves_no_task_behind():
    async def main() -> set[asyncio.Task[object]]:
        async with polybus.aio.connect("memory://lifecycle-aio") as bus:
            q = bus.work_queue("jobs")

            async def handle(msg: polybus.aio.AsyncMessage) -> None:
                await asyncio.sleep(0)

            await q.worker(handle, concurrency=3)
            await q.send_many(range(10))
            rpc = bus.rpc("echo")

            async def echo(body: object) -> object:
                return body

            await rpc.serve(echo)
            assert await rpc.call(1, timeout=5) == 1
        return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]

    assert asyncio.run(main()) == set()


WORKER = textwrap.dedent(
    """
    import sys, time, polybus
    bus = polybus.connect("memory://signals")
    q = bus.work_queue("jobs")
    q.send_many(range(3))

    @q.worker(prefetch=3)
    def handle(msg):
        print("handling", msg.body, flush=True)
        time.sleep(0.5)
        print("handled", msg.body, flush=True)

    bus.run()
    print("stopped cleanly", flush=True)
    """
)


def test_sigterm_stops_a_worker_process_after_its_running_handler_finishes():
    for signum in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True, env=os.environ
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("handling")
        time.sleep(0.2)  # bus.run() is installing its handlers; "handling 0" is still running
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert "handled 0" in out  # the running handler was allowed to finish
        assert out.rstrip().endswith("stopped cleanly")


def test_close_from_another_thread_ends_run_cleanly():
    for _ in range(20):
        bus = polybus.connect("memory://close-while-run")
        errors: list[BaseException] = []

        def serve(bus: polybus.Bus = bus, errors: list[BaseException] = errors) -> None:
            try:
                bus.run()
            except BaseException as exc:  # any escape is the failure under test
                errors.append(exc)

        runner = threading.Thread(target=serve)
        runner.start()
        time.sleep(0.01)
        bus.close()
        runner.join(timeout=10)
        assert not runner.is_alive(), "run() hung after close()"
        assert errors == []


SLOW_WORKER = textwrap.dedent(
    """
    import time, polybus
    bus = polybus.connect("memory://second-signal")
    q = bus.work_queue("jobs")
    q.send("slow")

    @q.worker()
    def handle(msg):
        print("handling", flush=True)
        time.sleep(3)

    bus.run()
    print("returned", flush=True)
    """
)


def test_a_second_signal_while_closing_stops_at_once_without_a_traceback():
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_WORKER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("handling")
    time.sleep(1.0)  # bus.run() has installed its handlers (the handler runs for 3 s)
    proc.send_signal(signal.SIGINT)  # close gracefully: waits for the running handler
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # no, now
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "returned" in out
