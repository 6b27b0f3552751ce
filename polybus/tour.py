"""``polybus tour [--url URL]``: every pattern end to end on one broker, shown step by step.

A newcomer's first proof that polybus works here: it sends, routes and receives real messages
on the URL (``memory://`` by default), prints what went where, and exits non-zero, saying what
did not arrive, if anything went wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import polybus
from polybus.core.url import parse_url, resolve_url

PREFIX = "polybus.tour"


class TourFailed(Exception):
    """A step of the tour did not see what it should have."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="broker URL (default: $POLYBUS_URL, else memory://), e.g. redis://localhost"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for each message (10)"
    )


def run(args: argparse.Namespace) -> int:
    url = resolve_url(args.url)
    try:
        shown = parse_url(url).redacted()
        print(f"polybus tour on {shown}\n")
        before = set(threading.enumerate())
        bus = polybus.connect(url)
    except polybus.PolybusError as exc:
        print(f"polybus tour: cannot connect: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    tour = Tour(bus, args.timeout, before)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("Work queue: two workers share the tasks, each task done once", tour.work_queue),
        ("Pub/sub: every subscriber gets every message", tour.pubsub),
        ("Direct routing: a message goes to the queues bound to its key", tour.direct),
        ("Topic routing: * is exactly one word, # is zero or more", tour.topic),
        ("RPC: call and wait for the reply, or for the server's error", tour.rpc),
        ("Close: workers stopped, subscriptions and connection closed", tour.close),
    ]
    try:
        for number, (title, step) in enumerate(steps, 1):
            print(f"{number}. {title}")
            step()
            print("   ok\n")
    except (TourFailed, polybus.PolybusError) as exc:
        print(f"   FAILED: {exc}")
        print(f"polybus tour: step {number} failed on {shown}: {exc}", file=sys.stderr)
        return 1
    finally:
        tour.clean_up()
        bus.close()
    print(f"Every pattern works on {shown}. Next: the programs in examples/ and README.md.")
    return 0


def _names(bodies: Iterable[Any]) -> str:
    return ", ".join(str(body) for body in bodies) or "nothing"


class Tour:
    """The steps, on one bus; each prints what happened and raises ``TourFailed`` if wrong."""

    def __init__(self, bus: polybus.Bus, timeout: float, threads: set[threading.Thread]) -> None:
        self.bus = bus
        self.timeout = timeout
        self.threads_before = threads
        self.leftovers: list[Callable[[], None]] = []  # deletes what the tour declared

    def clean_up(self) -> None:
        """Delete the queues and exchanges the tour declared: a tour leaves nothing behind."""
        while self.leftovers:
            with contextlib.suppress(polybus.PolybusError):
                self.leftovers.pop()()

    def receive(self, sub: polybus.Subscription, count: int, who: str) -> list[polybus.Message]:
        messages: list[polybus.Message] = []
        for _ in range(count):
            try:
                messages.append(sub.receive(timeout=self.timeout))
            except polybus.ReceiveTimeout:
                got = _names(m.key if m.key else m.body for m in messages)
                raise TourFailed(
                    f"{who} expected {count} message(s) but got only {len(messages)} ({got}) "
                    f"within {self.timeout}s"
                ) from None
        return messages

    def work_queue(self) -> None:
        tasks = self.bus.work_queue(f"{PREFIX}.tasks", durable=False, dead_letter=None)
        self.leftovers.append(tasks.delete)
        tasks.purge()  # leftovers of an interrupted tour
        done: dict[str, list[str]] = {"A": [], "B": []}
        finished = threading.Semaphore(0)

        def worker(name: str) -> Callable[[polybus.Message], None]:
            def handle(msg: polybus.Message) -> None:
                time.sleep(0.02)  # some work, so that both workers get a share
                done[name].append(msg.body)
                finished.release()  # returning acks the message

            return handle

        workers = [tasks.worker(worker(name), prefetch=1) for name in done]
        sent = [f"task-{n}" for n in range(1, 7)]
        tasks.send_many(sent)
        print(f"   sent      {_names(sent)} to queue {tasks.name!r}")
        for _ in sent:
            if not finished.acquire(timeout=self.timeout):
                break
        for running in workers:
            running.close()
        for name, bodies in done.items():
            print(f"   worker {name}  did {_names(bodies)}")
        all_done = sorted(done["A"] + done["B"])
        if all_done != sorted(sent):
            raise TourFailed(f"sent {_names(sent)} but the workers did {_names(all_done)}")

    def pubsub(self) -> None:
        news = self.bus.pubsub(f"{PREFIX}.news")
        self.leftovers.append(news.delete)
        with news.subscribe() as first, news.subscribe() as second:
            published = ["hello", "world"]
            for body in published:
                news.publish(body)
            print(f"   published {_names(published)} on fanout {news.name!r}")
            for name, sub in (("A", first), ("B", second)):
                got = [m.body for m in self.receive(sub, len(published), f"subscriber {name}")]
                print(f"   subscriber {name} got {_names(got)}")
                if got != published:
                    raise TourFailed(f"subscriber {name} got {_names(got)}")

    def direct(self) -> None:
        logs = self.bus.router(f"{PREFIX}.direct_logs", kind="direct")
        self.leftovers.append(logs.delete)
        bindings = {"errors": ["error"], "all": ["info", "warning", "error"]}
        with logs.subscribe(bindings["errors"]) as errors, logs.subscribe(bindings["all"]) as all_:
            for name, keys in bindings.items():
                print(f"   queue {name!r:8} bound to {_names(keys)}")
            for key in bindings["all"]:
                logs.publish(f"a {key} line", key=key)
            print(f"   published with keys {_names(bindings['all'])}")
            self.check_routing({"errors": errors, "all": all_}, bindings, width=8)

    def topic(self) -> None:
        logs = self.bus.router(f"{PREFIX}.topic_logs", kind="topic")
        self.leftovers.append(logs.delete)
        expected = {
            "kern.*": ["kern.critical", "kern.disk"],
            "*.critical": ["kern.critical", "app.critical"],
            "a.#": ["a", "a.b.c"],
        }
        # the unmatched key goes first: a wrong match would arrive before the right ones
        keys = ["other.info", "kern.critical", "kern.disk", "app.critical", "a", "a.b.c"]
        with contextlib.ExitStack() as stack:
            subs = {p: stack.enter_context(logs.subscribe([p])) for p in expected}
            for key in keys:
                logs.publish(f"from {key}", key=key)
            print(f"   published with keys {_names(keys)}")
            self.check_routing(subs, expected, width=12)
        print("   'a.#' got 'a': # matched zero words; nobody got 'other.info': it was dropped")

    def check_routing(
        self,
        subs: dict[str, polybus.Subscription],
        expected: dict[str, list[str]],
        width: int,
    ) -> None:
        for name, sub in subs.items():
            got = [m.key for m in self.receive(sub, len(expected[name]), repr(name))]
            print(f"   {name!r:{width}} got {_names(got)}")
            if got != expected[name]:
                raise TourFailed(f"{name!r} should get {_names(expected[name])}")

    def rpc(self) -> None:
        fib = self.bus.rpc(f"{PREFIX}.fib")
        server = fib.serve(_fib)
        self.leftovers += [fib.delete, server.close]  # the server stops first
        for n, expected in ((10, 55), (20, 6765)):
            answer = fib.call(n, timeout=self.timeout)
            print(f"   fib({n}) -> {answer}")
            if answer != expected:
                raise TourFailed(f"fib({n}) should be {expected}")
        try:
            fib.call(-1, timeout=self.timeout)
        except polybus.RemoteError as exc:
            print(f"   fib(-1) -> RemoteError: {exc}  (raised in the server)")
        else:
            raise TourFailed("fib(-1) should have raised RemoteError")

    def close(self) -> None:
        self.clean_up()
        self.bus.close()
        left = [t.name for t in threading.enumerate() if t not in self.threads_before]
        if left:
            raise TourFailed(f"threads still running after close: {_names(left)}")
        print("   bus closed, no thread left behind")


def _fib(n: int) -> int:
    if n < 0:
        raise ValueError(f"fib({n}) is not defined")
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)
