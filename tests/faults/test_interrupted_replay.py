"""A dead-letter replay killed with SIGKILL half way loses nothing: every dead letter is then in
its queue or still a dead letter (a few in both: those copied whose ack the kill cut off)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polybus
from polybus import ReceiveTimeout
from polybus.core.headers import DEAD_QUEUE, DEAD_REASON

DEAD = 3000
KILL_AT = DEAD // 3  # replayed messages seen in the queue before the replay is killed
DEADLINE = 90.0
CHILD_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(polybus.__file__).parents[1]), os.environ.get("PYTHONPATH")])
    ),
}
REPLAY = (
    "import polybus, sys; polybus.connect(sys.argv[1]).work_queue('orders').dead_letters.replay()"
)


def drain(queue: polybus.WorkQueue, into: list[int], quiet: float) -> None:
    with queue.consume(prefetch=500) as sub:
        while True:
            try:
                msg = sub.receive(timeout=quiet)
            except ReceiveTimeout:
                return
            into.append(msg.body)
            msg.ack()


def test_a_replay_killed_half_way_loses_nothing(broker: Any) -> None:
    url: str = broker.url
    with polybus.connect(url) as bus:
        orders = bus.work_queue("orders")
        orders.declare()
        death = {DEAD_QUEUE: orders.name, DEAD_REASON: "rejected"}
        bus.work_queue("orders.dead").send_many(range(DEAD), headers=death)
        replay = subprocess.Popen([sys.executable, "-c", REPLAY, url], env=CHILD_ENV)
        try:
            deadline = time.monotonic() + DEADLINE
            while orders.size() < KILL_AT:
                assert replay.poll() is None, "the replay ended before it could be killed"
                assert time.monotonic() < deadline, "the replay made no progress"
                time.sleep(0.01)
            replay.kill()
        finally:
            replay.kill()
            replay.wait()
        replayed: list[int] = []
        still_dead: list[int] = []
        deadline = time.monotonic() + DEADLINE
        while len(set(replayed) | set(still_dead)) < DEAD and time.monotonic() < deadline:
            drain(orders, replayed, quiet=1.0)  # what the killed replay held comes back
            drain(bus.work_queue("orders.dead"), still_dead, quiet=1.0)
        both = set(replayed) & set(still_dead)
        figures = (
            f"{broker.name}: killed with {len(set(replayed))} replayed,"
            f" {len(set(still_dead))} still dead letters, {len(both)} in both"
        )
        print(figures)
        assert set(replayed) | set(still_dead) == set(range(DEAD)), figures
        assert KILL_AT <= len(set(replayed)) < DEAD, figures
        assert len(both) <= 500, figures  # at most what the replay held unacked
