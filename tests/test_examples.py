"""Every example pair of examples/ runs on every available transport and does what the tutorial
says. On an in-process broker (memory://, fakeredis://) a pair runs as threads of this process
sharing the broker; on a real broker each program is a subprocess, run as a user would."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from polybus.core.url import parse_url
from polybus.testing.harness import HARNESSES, BrokerHarness

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
IN_PROCESS_SCHEMES = {"memory", "fakeredis"}  # brokers that live inside one process
WAIT = ("--timeout", "20")  # a receiver gives up (and fails) rather than hang
DEADLINE = 60.0


class Output:
    """What every program of a scenario printed, in one text; safe to write from any thread."""

    def __init__(self) -> None:
        self._text = ""
        self._changed = threading.Condition()

    def write(self, text: str) -> int:
        with self._changed:
            self._text += text
            self._changed.notify_all()
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered."""

    def __str__(self) -> str:
        with self._changed:
            return self._text

    def wait_for(self, text: str, count: int = 1) -> None:
        """Block until ``text`` was printed ``count`` times (a listener is ready, say)."""
        with self._changed:
            done = self._changed.wait_for(lambda: self._text.count(text) >= count, DEADLINE)
        assert done, f"{text!r} not printed {count} time(s); output so far:\n{self._text}"


class Program:
    """A started example: ``wait()`` returns its exit code."""

    def __init__(self, wait: Callable[[], int]) -> None:
        self.wait = wait


class Runner:
    """Runs example programs on one URL and collects their output."""

    def __init__(self, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.url = url
        self.output = Output()
        self._monkeypatch = monkeypatch
        self.in_process = parse_url(url).scheme in IN_PROCESS_SCHEMES
        self._processes: list[subprocess.Popen[str]] = []

    def start(self, program: str, *args: str) -> Program:
        argv = ["--url", self.url, *args]
        if self.in_process:
            return self._start_thread(program, argv)
        return self._start_process(program, argv)

    def __call__(self, program: str, *args: str) -> int:
        """Run a program to its end and return its exit code."""
        return self.start(program, *args).wait()

    def _start_thread(self, program: str, argv: list[str]) -> Program:
        # set in the test's own phase: pytest's capture swaps sys.stdout between phases
        self._monkeypatch.setattr(sys, "stdout", self.output)
        module = _load(program)
        result: list[int] = []

        def run() -> None:  # as the program's own ``run(main)`` would, with these arguments
            try:
                module.run(lambda: module.main(argv))
            except SystemExit as end:
                result.append(end.code if isinstance(end.code, int) else 1)
            except BaseException:
                self.output.write(traceback.format_exc())
                result.append(1)

        thread = threading.Thread(target=run, name=program, daemon=True)
        thread.start()

        def wait() -> int:
            thread.join(DEADLINE)
            assert result, f"{program} still running after {DEADLINE}s:\n{self.output}"
            return result[0]

        return Program(wait)

    def _start_process(self, program: str, argv: list[str]) -> Program:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / program), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._processes.append(process)
        reader = threading.Thread(target=self._copy_output, args=(process,))
        reader.start()

        def wait() -> int:
            try:
                code = process.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{program} still running after {DEADLINE}s:\n{self.output}")
            reader.join()
            return code

        return Program(wait)

    def _copy_output(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                self.output.write(line)

    def kill_leftovers(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
                process.wait()


_modules: dict[str, ModuleType] = {}


def _load(program: str) -> ModuleType:
    """Import an example by file (they are scripts, not a package, sharing ``_tutorial``)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    if program not in _modules:
        spec = importlib.util.spec_from_file_location(f"example_{program[:-3]}", EXAMPLES / program)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _modules[program] = module
    return _modules[program]


@pytest.fixture(params=list(HARNESSES))
def run(
    request: pytest.FixtureRequest,
    harness: Callable[[str], BrokerHarness],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Runner]:
    """A runner on a fresh namespace of one transport (skipped if the broker is unavailable,
    failed if ``POLYBUS_REQUIRE`` names it)."""
    broker = harness(request.param)
    namespace = f"ex{os.urandom(5).hex()}"
    runner = Runner(broker.url(namespace), monkeypatch)
    try:
        yield runner
    finally:
        runner.kill_leftovers()
        broker.cleanup(namespace)


def test_hello_world_message_waits_in_the_queue_for_the_receiver(run: Runner) -> None:
    # Given a message sent while nobody listens
    assert run("send.py", "Hello World!") == 0
    # When the receiver starts afterwards
    assert run("receive.py", "--count", "1", *WAIT) == 0
    # Then it gets the message
    assert " [x] Received 'Hello World!'" in str(run.output)


def test_two_workers_share_the_tasks_each_done_once(run: Runner) -> None:
    # Given four tasks in the durable task queue
    tasks = ["First task.", "Second task..", "Third task.", "Fourth task.."]
    for task in tasks:
        assert run("new_task.py", task) == 0
    # When two workers take two tasks each, acking each when done
    worker_args = ("--count", "2", "--delay", "0.05", *WAIT)
    workers = [run.start("worker.py", *worker_args) for _ in range(2)]
    # Then every task was done exactly once
    assert [worker.wait() for worker in workers] == [0, 0]
    output = str(run.output)
    for task in tasks:
        assert output.count(f" [x] Received {task!r}") == 1, output
    assert output.count(" [x] Done") == 4


def test_every_log_receiver_gets_every_broadcast(run: Runner) -> None:
    # Given two receivers subscribed to the fanout
    receivers = [run.start("receive_logs.py", "--count", "1", *WAIT) for _ in range(2)]
    run.output.wait_for("Waiting for logs", count=2)
    # When a log line is broadcast
    assert run("emit_log.py", "info: Hello World!") == 0
    # Then both receive it
    assert [receiver.wait() for receiver in receivers] == [0, 0]
    assert str(run.output).count(" [x] 'info: Hello World!'") == 2


def test_direct_logs_arrive_only_for_the_chosen_severities(run: Runner) -> None:
    # Given a receiver of warnings and errors only
    receiver = run.start("receive_logs_direct.py", "--count", "2", *WAIT, "warning", "error")
    run.output.wait_for("Waiting for logs")
    # When info, warning and error lines are published, info first
    for severity in ("info", "warning", "error"):
        assert run("emit_log_direct.py", severity, f"a {severity} line") == 0
    # Then the receiver's two messages are the warning and the error
    assert receiver.wait() == 0
    output = str(run.output)
    assert " [x] 'warning':'a warning line'" in output
    assert " [x] 'error':'a error line'" in output
    assert " [x] 'info'" not in output


def test_topic_logs_arrive_for_matching_patterns_including_zero_word_hash(run: Runner) -> None:
    # Given a receiver of "kern.*", "*.critical" and "audit.#"
    patterns = ("kern.*", "*.critical", "audit.#")
    receiver = run.start("receive_logs_topic.py", "--count", "3", *WAIT, *patterns)
    run.output.wait_for("Waiting for logs")
    # When lines are published with matching and non-matching keys, non-matching first
    keys = ("app.info", "kern.disk.full", "kern.info", "app.critical", "audit")
    for key in keys:
        assert run("emit_log_topic.py", key, f"from {key}") == 0
    # Then exactly the matching ones arrive ("audit.#" matches "audit": # is zero words too)
    assert receiver.wait() == 0
    output = str(run.output)
    for key in ("kern.info", "app.critical", "audit"):
        assert f" [x] {key!r}:'from {key}'" in output
    for key in ("app.info", "kern.disk.full"):
        assert f" [x] {key!r}:" not in output


def test_rpc_client_gets_fibonacci_and_sees_a_remote_error(run: Runner) -> None:
    # Given a server that answers two requests
    server = run.start("rpc_server.py", "--count", "2")
    run.output.wait_for("Awaiting RPC requests")
    # When a client asks for fib(10), then for fib(-1), which the server cannot compute
    assert run("rpc_client.py", "--timeout", "20", "10") == 0
    assert run("rpc_client.py", "--timeout", "20", "--", "-1") == 1
    # Then the first gets 55 and the second the server's error
    assert server.wait() == 0
    output = str(run.output)
    assert " [.] Got 55" in output
    assert " [!] The server failed: ValueError: fib(-1) is not defined" in output


def test_worker_gives_up_when_no_task_comes(run: Runner) -> None:
    # Given an empty task queue, when a worker waits a short time, then it fails, not hangs
    started = time.monotonic()
    assert run("worker.py", "--count", "1", "--timeout", "0.5") != 0
    assert time.monotonic() - started < DEADLINE
    assert " [!] Gave up: no message on" in str(run.output)
    assert "Traceback" not in str(run.output)


def test_a_standalone_example_on_memory_says_it_is_in_process_only() -> None:
    # Given a sender run alone, on the default memory:// broker
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "new_task.py"), "--url", "memory://", "hi"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    # Then it sends, and says that no other program will see the message, and how to fix it
    assert done.returncode == 0
    assert " [x] Sent 'hi'" in done.stdout
    assert "inside this one process" in done.stderr and "--url redis://" in done.stderr
