"""Consumer processes killed with SIGKILL while a producer streams confirmed messages: nothing
confirmed is lost, and every duplicate is explained by a kill.

Each consumer process (``acking_consumer.py``, blocking and asyncio APIs alternately) logs
``got`` before and ``acked`` after each ack call. The log is the ground truth:

- lost: a confirmed message no process acked;
- an unexplained duplicate: a message delivered again while the process holding it was still
  alive (every delivery but the last must have gone to a process killed before the next one),
  or acked by two processes neither of which was killed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import polybus.aio
from polybus import ConnectionFailed, PublishFailed

SCRIPT = Path(__file__).with_name("acking_consumer.py")
# the consumer processes import the polybus this test imported, wherever it comes from
CHILD_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(polybus.__file__).parents[1]), os.environ.get("PYTHONPATH")])
    ),
}
TOTAL = 3000  # messages sent
PRODUCE_FOR = 10.0  # seconds over which they are sent
BATCH = 15  # sends in flight at once
CONSUMERS = 3  # processes alive at once
PREFETCH = 10
WORK = 0.01  # seconds a consumer holds each message: together they keep pace, barely
KILL_EVERY = 1.0
KILLS = 10
READY_TIMEOUT = 30.0
DRAIN_TIMEOUT = 60.0
SETTLE = 3.0  # after the drain: a Redis heartbeat (2 s) and a tick, for late redeliveries


@dataclass
class Log:
    """What one consumer process wrote: deliveries (body, delivery count, time) and acks."""

    ready: float | None = None
    got: list[tuple[int, int, float]] = field(default_factory=list)
    acked: list[tuple[int, float]] = field(default_factory=list)


def read_log(path: Path) -> Log:
    log = Log()
    if not path.exists():
        return log
    complete = path.read_text(encoding="utf-8").split("\n")[:-1]  # a torn last line is skipped
    for line in complete:
        word, *rest = line.split()
        if word == "ready":
            log.ready = float(rest[0])
        elif word == "got":
            log.got.append((int(rest[0]), int(rest[1]), float(rest[2])))
        elif word == "acked":
            log.acked.append((int(rest[0]), float(rest[1])))
        else:
            raise AssertionError(f"{path}: unexpected line {line!r}")
    return log


class Consumer:
    """One consumer process and its log."""

    def __init__(self, index: int, url: str, queue: str, directory: Path) -> None:
        self.index = index
        self.api = ("aio", "blocking")[index % 2]
        self.log_path = directory / f"consumer-{index}.log"
        self.err_path = directory / f"consumer-{index}.err"
        self.killed_at: float | None = None
        with open(self.err_path, "wb") as err:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(SCRIPT),
                    url,
                    queue,
                    str(PREFETCH),
                    self.api,
                    str(WORK),
                    str(self.log_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=CHILD_ENV,
                stderr=err,
            )

    def log(self) -> Log:
        return read_log(self.log_path)

    def kill(self) -> None:
        self.killed_at = time.monotonic()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def check_alive(self) -> None:
        """A process that exited without being killed is a failure, with its stderr."""
        code = self.process.poll()
        if code is not None and self.killed_at is None:
            err = self.err_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise AssertionError(f"consumer {self.index} ({self.api}) exited {code}:\n{err}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


async def produce(queue: polybus.aio.WorkQueue, confirmed: set[int], errors: Counter[str]) -> None:
    """Send 0..TOTAL-1, BATCH at a time, paced over PRODUCE_FOR seconds."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    interval = PRODUCE_FOR * BATCH / TOTAL
    for tick, first in enumerate(range(0, TOTAL, BATCH)):
        ids = range(first, min(first + BATCH, TOTAL))
        results = await asyncio.gather(*(queue.send(i) for i in ids), return_exceptions=True)
        for i, result in zip(ids, results, strict=True):
            if result is None:
                confirmed.add(i)
            elif isinstance(result, (PublishFailed, ConnectionFailed)):
                errors[type(result).__name__] += 1  # raised, so not confirmed: allowed
            else:
                raise result
        await asyncio.sleep(max(0.0, started + (tick + 1) * interval - loop.time()))


def unexplained_duplicates(consumers: list[Consumer], logs: list[Log]) -> list[str]:
    """Deliveries and acks of one message that no kill explains."""
    deliveries: dict[int, list[tuple[float, Consumer]]] = {}
    ackers: dict[int, list[Consumer]] = {}
    for consumer, log in zip(consumers, logs, strict=True):
        for body, _count, at in log.got:
            deliveries.setdefault(body, []).append((at, consumer))
        for body, _at in log.acked:
            ackers.setdefault(body, []).append(consumer)
    problems = []
    for body, times in deliveries.items():
        times.sort(key=lambda item: item[0])
        for (at, holder), (next_at, taker) in itertools.pairwise(times):
            if holder.killed_at is None or holder.killed_at > next_at:
                problems.append(
                    f"{body}: delivered to consumer {taker.index} at {next_at:.3f} while "
                    f"consumer {holder.index} (got it at {at:.3f}, killed at "
                    f"{holder.killed_at}) was alive"
                )
    for body, by in ackers.items():
        survivors = [c.index for c in by if c.killed_at is None]
        if len(by) > 1 and (len(survivors) > 1 or len(survivors) == len(by)):
            problems.append(f"{body}: acked by {[c.index for c in by]}, none of them killed")
    return problems


def who_got(bodies: list[int], consumers: list[Consumer], logs: list[Log]) -> dict[int, list[str]]:
    """For each body, the processes that logged it: index, API, killed or alive."""
    got: dict[int, list[str]] = {body: [] for body in bodies}
    for consumer, log in zip(consumers, logs, strict=True):
        fate = "alive" if consumer.killed_at is None else f"killed at {consumer.killed_at:.3f}"
        for body, count, at in log.got:
            if body in got:
                got[body].append(
                    f"consumer {consumer.index} ({consumer.api}, {fate}) got it at {at:.3f}"
                    f" (delivery {count})"
                )
    return got


@pytest.mark.timeout(150)
async def test_killed_consumer_processes_lose_nothing_confirmed_and_duplicates_follow_kills(
    broker, tmp_path
):
    consumers: list[Consumer] = []

    def start_consumer() -> Consumer:
        consumer = Consumer(len(consumers), broker.url, "work", tmp_path)
        consumers.append(consumer)
        return consumer

    confirmed: set[int] = set()
    errors: Counter[str] = Counter()
    try:
        async with polybus.aio.connect(broker.url) as bus:
            queue = bus.work_queue("work")
            await queue.declare()
            # Given three consumer processes on a work queue
            for _ in range(CONSUMERS):
                start_consumer()
            deadline = time.monotonic() + READY_TIMEOUT
            while not all(c.log().ready for c in consumers):
                for c in consumers:
                    c.check_alive()
                assert time.monotonic() < deadline, "consumers did not start"
                await asyncio.sleep(0.05)
            # When a producer streams confirmed messages while, every second, the oldest
            # consumer is killed with SIGKILL and a new one started
            started = time.monotonic()
            producing = asyncio.ensure_future(produce(queue, confirmed, errors))
            last_kill = started
            for _ in range(KILLS):
                await asyncio.sleep(KILL_EVERY)
                alive = [c for c in consumers if c.killed_at is None]
                for c in alive:
                    c.check_alive()
                victim = next((c for c in alive if c.log().ready), alive[0])
                victim.kill()
                last_kill = victim.killed_at or last_kill
                start_consumer()
            await producing
            # Then the consumers left drain the queue: every confirmed message acked
            deadline = last_kill + DRAIN_TIMEOUT
            while True:
                acked = {body for c in consumers for body, _ in c.log().acked}
                if confirmed <= acked:
                    drained = time.monotonic() - last_kill
                    break
                for c in consumers:
                    c.check_alive()
                if time.monotonic() > deadline:
                    drained = float("inf")
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(SETTLE)  # late redeliveries show up in the logs too
            for c in consumers:
                c.check_alive()
            left = await queue.size()
    finally:
        for c in consumers:
            c.stop()

    logs = [c.log() for c in consumers]
    acked_count = Counter(body for log in logs for body, _ in log.acked)
    got_count = Counter(body for log in logs for body, _, _ in log.got)
    lost = sorted(confirmed - set(acked_count))
    strangers = sorted(set(got_count) - set(range(TOTAL)))
    redelivered = sum(1 for log in logs for _, count, _ in log.got if count > 1)
    problems = unexplained_duplicates(consumers, logs)
    kills = sum(1 for c in consumers if c.killed_at is not None)
    figures = {
        "broker": broker.name,
        "sent": TOTAL,
        "confirmed": len(confirmed),
        "not_confirmed": dict(errors),
        "lost": len(lost),
        "duplicates": sum(1 for n in acked_count.values() if n > 1),
        "delivered_twice_or_more": sum(1 for n in got_count.values() if n > 1),
        "redelivered_deliveries": redelivered,
        "max_delivery_count": max((count for log in logs for _, count, _ in log.got), default=0),
        "kills": kills,
        "processes": len(consumers),
        "drain_after_last_kill_s": round(drained, 2),
        "left_in_queue": left,
        "total_s": round(time.monotonic() - started, 1),
    }
    print(f"\nkilled consumers {broker.name}: {figures}")

    assert kills == KILLS, figures
    assert not lost, (
        f"{len(lost)} confirmed but never acked: {lost[:20]}; who got them: "
        f"{who_got(lost[:20], consumers, logs)}; {figures}"
    )
    assert not strangers, f"acked bodies that were never sent: {strangers[:20]}; {figures}"
    assert not problems, f"unexplained duplicates: {problems[:10]}; {figures}"
    assert left == 0, figures
    # the kills caught messages in flight: the test exercised redelivery
    assert redelivered > 0, figures
