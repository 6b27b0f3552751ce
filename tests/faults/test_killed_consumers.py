"""Consumer processes killed with SIGKILL while a producer streams confirmed messages: nothing
confirmed is lost, and every duplicate is explained by a kill.

Each consumer process (``acking_consumer.py``, blocking and asyncio APIs alternately) logs
``got`` when it takes a message, ``acking`` just before its ack call and ``acked`` once the call
returned. After the drain the processes left are killed too, and the test's own consumer sweeps
whatever the broker still holds. The logs and the sweep are the ground truth:

- lost: a confirmed message that nobody acked (no ``acked`` line, no ``acking`` line of a
  process killed before it could write ``acked``) and that the broker no longer has;
- stranded: a confirmed message nobody acked that the broker still had after the drain (it was
  never given to the consumers that were alive);
- an unexplained duplicate: a message delivered again while the process holding it was still
  alive (every delivery but the last must have gone to a process killed before the next one),
  or acked by two processes that were both alive until the end.
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
from polybus import ConnectionFailed, PublishFailed, ReceiveTimeout

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
SWEEP_WAIT = 4.0  # a Redis heartbeat (2 s) and the reap after it: what killed processes held


@dataclass
class Log:
    """What one consumer process wrote: deliveries (body, delivery count, time), acks begun and
    acks done (body, time)."""

    ready: float | None = None
    got: list[tuple[int, int, float]] = field(default_factory=list)
    acking: list[tuple[int, float]] = field(default_factory=list)
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
        elif word == "acking":
            log.acking.append((int(rest[0]), float(rest[1])))
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
        self.survived = False  # killed only once the queue was drained
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
                stderr=err,
                env=CHILD_ENV,
            )

    def log(self) -> Log:
        return read_log(self.log_path)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.killed_at = time.monotonic()
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def check_alive(self) -> None:
        """A process that exited without being killed is a failure, with its stderr."""
        code = self.process.poll()
        if code is not None and self.killed_at is None:
            err = self.err_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise AssertionError(f"consumer {self.index} ({self.api}) exited {code}:\n{err}")


def unlogged_acks(consumer: Consumer, log: Log) -> set[int]:
    """What a killed process may have acked without saying so: killed between its ack call and
    its ``acked`` line (its last ``acking``, at most one)."""
    if consumer.killed_at is None:
        return set()
    return {body for body, _ in log.acking} - {body for body, _ in log.acked}


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
        survivors = [c.index for c in by if c.survived]
        if len(survivors) > 1:
            problems.append(
                f"{body}: acked by {[c.index for c in by]}, of which {survivors} "
                "were alive until the end"
            )
    return problems


def who_got(bodies: list[int], consumers: list[Consumer], logs: list[Log]) -> dict[int, list[str]]:
    """For each body, the processes that logged it: index, API, what they logged, their end."""
    got: dict[int, list[str]] = {body: [] for body in bodies}
    for consumer, log in zip(consumers, logs, strict=True):
        if consumer.killed_at is None:
            fate = "alive"
        else:
            fate = f"{'stopped' if consumer.survived else 'killed'} at {consumer.killed_at:.3f}"
        for body, count, at in log.got:
            if body in got:
                acking = any(b == body for b, _ in log.acking)
                acked = any(b == body for b, _ in log.acked)
                got[body].append(
                    f"consumer {consumer.index} ({consumer.api}, {fate}) got it at {at:.3f}"
                    f" (delivery {count}; acking: {acking}, acked: {acked})"
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

    def done() -> set[int]:
        """What the logs say was acked (or may have been, by a process killed meanwhile)."""
        acked: set[int] = set()
        for c in consumers:
            log = c.log()
            acked |= {body for body, _ in log.acked} | unlogged_acks(c, log)
        return acked

    confirmed: set[int] = set()
    errors: Counter[str] = Counter()
    swept: list[tuple[int, int]] = []  # (body, delivery count) the broker still had at the end
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
            while not (drained := confirmed <= done()) and time.monotonic() < deadline:
                for c in consumers:
                    c.check_alive()
                await asyncio.sleep(0.1)
            drain_time = time.monotonic() - last_kill
            for c in consumers:
                c.check_alive()
            # And once they are gone too, the broker holds nothing that nobody acked
            for c in consumers:
                if c.killed_at is None:
                    c.survived = True
                    c.kill()
            async with queue.consume(prefetch=100) as sub:
                while True:
                    try:
                        msg = await sub.receive(timeout=SWEEP_WAIT)
                    except ReceiveTimeout:
                        break
                    swept.append((msg.body, msg.delivery_count))
                    await msg.ack()
    finally:
        for c in consumers:
            c.kill()

    logs = [c.log() for c in consumers]
    acked_count = Counter(body for log in logs for body, _ in log.acked)
    maybe_acked = set().union(
        *(unlogged_acks(c, log) for c, log in zip(consumers, logs, strict=True))
    )
    left = {body for body, _ in swept}
    stranded = sorted((confirmed & left) - set(acked_count) - maybe_acked)
    lost = sorted(confirmed - set(acked_count) - maybe_acked - left)
    got_count = Counter(body for log in logs for body, _, _ in log.got)
    strangers = sorted((set(got_count) | left) - set(range(TOTAL)))
    problems = unexplained_duplicates(consumers, logs)
    kills = sum(1 for c in consumers if c.killed_at is not None and not c.survived)
    figures = {
        "broker": broker.name,
        "sent": TOTAL,
        "confirmed": len(confirmed),
        "not_confirmed": dict(errors),
        "lost": len(lost),
        "stranded": len(stranded),
        "duplicates": sum(1 for body, n in acked_count.items() if n > 1 or body in left),
        "acked_unlogged": len(maybe_acked - set(acked_count) - left),
        "delivered_twice_or_more": sum(1 for n in got_count.values() if n > 1),
        "redelivered_deliveries": sum(1 for log in logs for _, n, _ in log.got if n > 1),
        "max_delivery_count": max((n for log in logs for _, n, _ in log.got), default=0),
        "left_after_drain": len(swept),
        "kills": kills,
        "processes": len(consumers),
        "drain_after_last_kill_s": round(drain_time, 2) if drained else f">{DRAIN_TIMEOUT}",
        "total_s": round(time.monotonic() - started, 1),
    }
    print(f"\nkilled consumers {broker.name}: {figures}")

    assert kills == KILLS, figures
    assert not lost, (
        f"{len(lost)} confirmed, never acked and gone from the broker: {lost[:20]}; who got "
        f"them: {who_got(lost[:20], consumers, logs)}; {figures}"
    )
    assert not stranded, (
        f"{len(stranded)} confirmed messages were never given to a live consumer within "
        f"{DRAIN_TIMEOUT}s of the last kill: {stranded[:20]}; who got them: "
        f"{who_got(stranded[:20], consumers, logs)}; {figures}"
    )
    assert not strangers, f"received bodies that were never sent: {strangers[:20]}; {figures}"
    assert not problems, f"unexplained duplicates: {problems[:10]}; {figures}"
    # the kills caught messages in flight: the test exercised redelivery
    assert figures["redelivered_deliveries"], figures
