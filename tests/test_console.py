"""The queue commands (``polybus queues | peek | send | listen | purge | dead-letters``) on every
transport, as a user runs them: what they print, their exit codes, bad arguments, an unreachable
broker. Most run in this process (``main``), so they share an in-process broker with the test;
stopping ``listen`` with a signal runs it as a process of its own."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import polybus
from polybus.cli import main
from polybus.console.common import FAILED, NOT_FOUND, OK, UNREACHABLE, UNSUPPORTED, USAGE
from polybus.testing.harness import BrokerHarness

TRANSPORTS = ("memory", "fakeredis", "redis", "rabbitmq", "nats")


class Console:
    """Runs ``polybus`` commands against one fresh namespace of a broker."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.url = url
        self._capsys = capsys
        self.bus = polybus.connect(url)

    def __call__(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        """Exit code, stdout and stderr of ``polybus ARGV --url URL``."""
        self._capsys.readouterr()
        saved = sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            code = main([*argv, "--url", self.url])
        finally:
            sys.stdin = saved
        out, err = self._capsys.readouterr()
        return code, out, err

    def said(self) -> tuple[str, str]:
        """What was printed since last asked: stdout and stderr."""
        out, err = self._capsys.readouterr()
        return out, err

    def until_said(self, text: str) -> str:
        """Wait until a command running on another thread says ``text`` on stderr; what it
        printed on stdout meanwhile."""
        printed = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            out, err = self.said()
            printed += out
            if text in err:
                return printed
            time.sleep(0.02)
        raise AssertionError(f"{text!r} never said")

    def lines(self, *argv: str) -> list[dict[str, Any]]:
        code, out, err = self(*argv)
        assert code == OK, err
        return [json.loads(line) for line in out.splitlines()]

    def dead_letters_of(self, queue: polybus.WorkQueue, count: int) -> list[str]:
        """Send ``count`` messages and reject them: their ids, once all are dead letters."""
        ids = [f"{queue.name}-{n}" for n in range(count)]
        for n, message_id in enumerate(ids):
            queue.send({"n": n}, message_id=message_id)
        with queue.consume(prefetch=count) as sub:
            for _ in ids:
                sub.receive(timeout=10).reject()
        wait_until(lambda: queue.dead_letters.count() == count)
        return ids


def wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(params=TRANSPORTS)
def console(
    request: pytest.FixtureRequest,
    harness: Callable[[str], BrokerHarness],
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Console]:
    broker = harness(request.param)
    namespace = f"cli{os.urandom(5).hex()}"
    console = Console(broker.url(namespace), capsys)
    try:
        yield console
    finally:
        console.bus.close()
        broker.cleanup(namespace)


def test_send_then_peek_shows_the_message_and_leaves_it(console: Console) -> None:
    orders = console.bus.work_queue("orders")
    orders.declare()
    code, out, err = console(
        "send", "orders", '{"id": 7}', "--json", "--header", "origin=cli", "--header", "n:=3"
    )
    assert code == OK, err
    sent, message_id, to, queue = out.split()
    assert (sent, to, queue) == ("sent", "to", "orders")
    code, out, err = console("peek", "orders", "-n", "5")
    if not console.bus.capabilities.peek:
        assert code == UNSUPPORTED and "without consuming" in err
        return
    assert code == OK, err
    [line] = [json.loads(text) for text in out.splitlines()]
    assert line["body"] == {"id": 7} and line["headers"] == {"origin": "cli", "n": 3}
    assert line["message_id"] == message_id
    assert orders.size() == 1


def test_a_delayed_send_arrives_later(console: Console) -> None:
    orders = console.bus.work_queue("later")
    orders.declare()
    assert console("send", "later", "soon", "--delay", "0.5")[0] == OK
    assert orders.size() == 0
    with orders.consume() as sub:
        assert sub.receive(timeout=10).body == "soon"


def test_queues_shows_counts_of_the_queues_named_or_all(console: Console) -> None:
    orders = console.bus.work_queue("orders")
    orders.send_many(["a", "b", "c"])
    with orders.consume(prefetch=1) as sub:
        held = sub.receive(timeout=10)
        [row] = console.lines("queues", "orders", "--json")
        assert row["queue"] == "orders" and row["ready"] == 2 and row["dead"] == 0
        assert row["unacked"] in (1, None) and row["consumers"] in (1, None)
        held.reject()
    wait_until(lambda: orders.dead_letters.count() == 1)
    code, out, err = console("queues")
    if not console.bus.capabilities.list_queues:
        assert code == UNSUPPORTED and "name the queues" in err
        code, out, err = console("queues", "orders")
    assert code == OK, err
    header, *rows = out.splitlines()
    assert header.split() == ["QUEUE", "READY", "UNACKED", "CONSUMERS", "DEAD"]
    assert [row.split()[0] for row in rows] == ["orders"]  # its dead letters are a column
    assert rows[0].split()[1] == "2" and rows[0].split()[-1] == "1"


def test_listen_takes_a_queues_messages_one_json_line_each(console: Console) -> None:
    console.bus.work_queue("jobs").send_many([{"n": 1}, "two", b"\x00\x01"])
    lines = console.lines("listen", "jobs", "--count", "3")
    assert [line.get("body", line.get("body_base64")) for line in lines] == [
        {"n": 1},
        "two",
        "AAE=",
    ]
    assert console.bus.work_queue("jobs").size() == 0


def test_listen_to_an_exchange_prints_what_it_routes(console: Console) -> None:
    logs = console.bus.router("logs", "topic")
    logs.declare()
    codes: list[int] = []
    argv = ["listen", "--exchange", "logs", "--key", "app.*", "--count", "2", "--url", console.url]
    listener = threading.Thread(target=lambda: codes.append(main(argv)))
    listener.start()
    out = console.until_said("listening to exchange 'logs' (keys app.*)")
    for key, body in (("app.web", "up"), ("db.main", "slow"), ("app.cli", "ran")):
        logs.publish(body, key=key)
    listener.join(20)
    out += console.said()[0]
    assert codes == [OK]
    assert [(json.loads(line)["key"], json.loads(line)["body"]) for line in out.splitlines()] == [
        ("app.web", "up"),
        ("app.cli", "ran"),
    ]


def test_purge_asks_first(console: Console) -> None:
    stale = console.bus.work_queue("stale")
    stale.send_many(["a", "b"])
    code, out, _ = console("purge", "stale", stdin="n\n")
    assert (code, out.strip(), stale.size()) == (FAILED, "nothing purged", 2)
    code, out, _ = console("purge", "stale", stdin="y\n")
    assert (code, out.strip(), stale.size()) == (OK, "purged 2 messages from stale", 0)
    stale.send("c")
    assert console("purge", "stale", "--yes")[:2] == (OK, "purged 1 messages from stale\n")


def test_dead_letters_are_shown_replayed_by_id_and_discarded(console: Console) -> None:
    orders = console.bus.work_queue("orders")
    ids = console.dead_letters_of(orders, 3)
    code, out, err = console("dead-letters", "orders")
    if console.bus.capabilities.peek:
        assert code == OK, err
        shown = [json.loads(line) for line in out.splitlines()]
        assert [line["message_id"] for line in shown] == ids
        assert {line["dead"]["reason"] for line in shown} == {"rejected"}
        assert shown[0]["dead"]["queue"] == orders.name
    else:
        assert code == UNSUPPORTED and "without consuming" in err
    code, out, err = console("dead-letters", "orders", "--replay", "--id", ids[1])
    assert (code, out) == (OK, "replayed 1 dead letters to orders\n"), err
    with orders.consume() as sub:
        msg = sub.receive(timeout=10)
        assert msg.message_id == ids[1] and "x-polybus-dead-reason" not in msg.headers
        msg.ack()
    code, out, _ = console("dead-letters", "orders", "--discard")  # asks; no answer: no
    assert (code, out, orders.dead_letters.count()) == (FAILED, "nothing discarded\n", 2)
    assert console("dead-letters", "orders", "--discard", "--yes")[:2] == (
        OK,
        "discarded 2 dead letters of orders\n",
    )
    assert orders.dead_letters.count() == 0


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["peek", "orders", "-n", "0"], "limit must be from 1"),
        (["send", "orders", "x", "--header", "novalue"], "NAME=VALUE"),
        (["send", "orders", "x", "--header", "n:=nope"], "JSON"),
        (["send", "orders", "{", "--json"], "Expecting"),
        (["send", "orders", "x", "--delay", "-1"], "delay"),
        (["listen"], "QUEUE or --exchange"),
        (["listen", "orders", "--key", "a"], "--key goes with --exchange"),
        (["queues", "bad name!"], "name"),
    ],
)
def test_bad_arguments_exit_2_saying_what_is_wrong(
    console: Console, argv: list[str], why: str
) -> None:
    console.bus.work_queue("orders").declare()
    code, _, err = console(*argv)
    assert code == USAGE and why in err, err


def test_argparse_refusals_exit_2_without_showing_a_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    refused = (
        ["dead-letters", "q", "--replay", "--discard"],
        ["peek"],
        ["peek", "q", "-n", "x"],
        ["peek", "q", "amqp://guest:s3cret@localhost/"],  # the URL without --url
        ["send", "q", "x", "--delay", "redis://:s3cret@localhost"],
    )
    for argv in refused:
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == USAGE
        assert "s3cret" not in capsys.readouterr().err


def test_a_missing_queue_or_exchange_exits_4(console: Console) -> None:
    for argv in (
        ["peek", "missing"],
        ["send", "missing", "x"],
        ["purge", "missing", "--yes"],
        ["queues", "missing"],
        ["dead-letters", "missing", "--replay"],
        ["listen", "--exchange", "missing"],
    ):
        code, _, err = console(*argv)
        assert code == NOT_FOUND and "missing" in err, (argv, err)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret@127.0.0.1:1/0?connect_timeout=1",
        "amqp://guest:s3cret@127.0.0.1:1/?connect_timeout=1",
        "nats://user:s3cret@127.0.0.1:1?connect_timeout=1",
    ],
)
def test_an_unreachable_broker_exits_3_without_showing_the_password(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code = main(["queues", "orders", "--url", url])
    err = capsys.readouterr().err
    assert code == UNREACHABLE and time.monotonic() - started < 10
    assert "s3cret" not in err and "127.0.0.1:1" in err


def test_listen_stops_cleanly_on_ctrl_c_and_sigterm(
    harness: Callable[[str], BrokerHarness],
) -> None:
    redis = harness("redis")
    namespace = f"cli{os.urandom(5).hex()}"
    url = redis.url(namespace)
    try:
        with polybus.connect(url) as bus:
            jobs = bus.work_queue("jobs")
            for stop in (signal.SIGINT, signal.SIGTERM):
                jobs.send(stop.name)
                listener = subprocess.Popen(
                    [sys.executable, "-m", "polybus.cli", "listen", "jobs", "--url", url],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                assert listener.stdout is not None
                line = listener.stdout.readline()
                listener.send_signal(stop)
                _, err = listener.communicate(timeout=20)
                assert listener.returncode == OK, err
                assert "Traceback" not in err
                assert json.loads(line)["body"] == stop.name
                # acked once printed, or back in the queue if the signal came in between
                assert jobs.size() in (0, 1)
                jobs.purge()
    finally:
        redis.cleanup(namespace)
