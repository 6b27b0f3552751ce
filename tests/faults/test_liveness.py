"""Redelivery by liveness, with real processes: a killed consumer's messages come back, counted;
a slow but alive one keeps its message however long it takes, even with its event loop blocked.
On every broker with a test-owned server (``heartbeat=2`` where the broker has one)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import polybus.aio
from polybus import ReceiveTimeout

SCRIPT = Path(__file__).parents[1] / "consumer_process.py"


class Child:
    """A consumer process and the lines it prints."""

    def __init__(self, url: str, queue: str, prefetch: int, hold: float | str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT), url, queue, str(prefetch), str(hold)],
            stdout=subprocess.PIPE,
            text=True,
        )

    async def line(self, timeout: float = 30.0) -> str:
        assert self.process.stdout is not None
        loop = asyncio.get_running_loop()
        read = loop.run_in_executor(None, self.process.stdout.readline)
        return (await asyncio.wait_for(read, timeout)).strip()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


async def test_messages_held_by_a_killed_process_are_redelivered_with_their_count(broker):
    # Given a consumer process that took three messages and will never ack them
    async with polybus.aio.connect(broker.url) as bus:
        q = bus.work_queue("jobs")
        await q.declare()
        child = Child(broker.url, "jobs", 3, -1)
        try:
            assert await child.line() == "ready"
            await q.send_many(["a", "b", "c", "d"])
            got = sorted([await child.line() for _ in range(3)])
            assert got == ["got a 1", "got b 1", "got c 1"]
            # When the process is killed (no goodbye, its heartbeat just stops)
            child.kill()
        finally:
            child.stop()
        # Then another consumer gets all four; the three it held marked as second deliveries
        async with q.consume(prefetch=10) as sub:
            seen = {}
            for _ in range(4):
                msg = await sub.receive(timeout=15)
                seen[msg.body] = (msg.redelivered, msg.delivery_count)
                await msg.ack()
        assert seen == {"a": (True, 2), "b": (True, 2), "c": (True, 2), "d": (False, 1)}
        assert await q.size() == 0


async def test_a_slow_consumer_process_is_never_duplicated(broker):
    # Given a consumer process that holds its message for three heartbeat timeouts (2 s each)
    async with polybus.aio.connect(broker.url) as bus:
        q = bus.work_queue("slow")
        await q.declare()
        child = Child(broker.url, "slow", 1, 6.0)
        try:
            assert await child.line() == "ready"
            await q.send("long job")
            assert await child.line() == "got long job 1"
            # When another consumer waits all that time
            started = time.monotonic()
            async with q.consume() as sub:
                with pytest.raises(ReceiveTimeout):
                    await sub.receive(timeout=6.5)
                # Then the slow one acks it, and nobody else ever got it
                assert await child.line() == "acked long job"
                assert time.monotonic() - started >= 5
                with pytest.raises(ReceiveTimeout):
                    await sub.receive(timeout=1.0)
        finally:
            child.stop()
        assert await q.size() == 0


async def test_a_consumer_whose_event_loop_is_blocked_is_not_taken_for_dead(broker):
    # Given a consumer whose handler blocks its event loop for three heartbeat timeouts
    async with polybus.aio.connect(broker.url) as bus:
        q = bus.work_queue("blocked")
        await q.declare()
        child = Child(broker.url, "blocked", 1, "block:6")
        try:
            assert await child.line() == "ready"
            await q.send("cpu-bound job")
            assert await child.line() == "got cpu-bound job 1"
            # When another consumer waits all that time
            async with q.consume() as sub:
                with pytest.raises(ReceiveTimeout):
                    await sub.receive(timeout=6.5)
                # Then the blocked one finishes and acks it, and nobody else ever got it
                assert await child.line() == "acked cpu-bound job"
                with pytest.raises(ReceiveTimeout):
                    await sub.receive(timeout=1.0)
        finally:
            child.stop()
        assert await q.size() == 0


EXITING_WORKER = """
import sys, time, polybus
bus = polybus.connect(sys.argv[1])
q = bus.work_queue("exiting")

@q.worker(prefetch=5)
def handle(msg):
    print("handling", msg.body, flush=True)
    time.sleep(0.5)

sys.stdin.readline()  # the test says when: one message is being handled, four wait
"""


def _exiting_worker(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", EXITING_WORKER, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


async def test_a_worker_process_that_exits_without_closing_gives_up_no_message(broker):
    # Given a worker process (blocking API) holding five messages, handling the first
    async with polybus.aio.connect(broker.url) as bus:
        q = bus.work_queue("exiting")
        await q.send_many(range(5))
        child = _exiting_worker(broker.url)
        try:
            assert child.stdout is not None and child.stdin is not None
            assert (await asyncio.to_thread(child.stdout.readline)).strip() == "handling 0"
            # When its program ends without closing the bus (the handler's threads go first)
            child.stdin.write("\n")
            child.stdin.flush()
            assert await asyncio.to_thread(child.wait, 30) == 0
        finally:
            if child.poll() is None:
                child.kill()
            child.communicate()  # and close the pipes
        # Then what it did not handle is neither retried nor dead-lettered: it comes back as
        # is (and the message it handled, too, if its ack had not left before the exit)
        async with q.consume(prefetch=10) as sub:
            bodies = []
            while not {1, 2, 3, 4} <= set(bodies):
                msg = await sub.receive(timeout=15)
                assert "x-polybus-retries" not in msg.headers, msg.headers
                bodies.append(msg.body)
                await msg.ack()
        assert sorted(bodies) in ([1, 2, 3, 4], [0, 1, 2, 3, 4])
        assert await bus.work_queue("exiting.dead").size() == 0
