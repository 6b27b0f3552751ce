"""The ``polybus`` command: ``polybus tour`` proves every pattern, or says clearly what failed."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

import polybus
from polybus.cli import main


@pytest.fixture
def memory_url(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("POLYBUS_URL", raising=False)
    return f"memory://tour-{os.urandom(4).hex()}"


def test_tour_shows_every_pattern_working_on_memory(
    memory_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the tour runs on a memory broker
    code = main(["tour", "--url", memory_url])
    # Then it succeeds and shows what was sent, routed and received, step by step
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("   ok\n") == 6
    assert "sent      task-1, task-2, task-3, task-4, task-5, task-6" in out
    assert out.count("got hello, world") == 2
    assert "'errors' got error\n" in out
    assert "'a.#'        got a, a.b.c\n" in out
    assert "fib(10) -> 55" in out
    assert "fib(-1) -> RemoteError: ValueError: fib(-1) is not defined" in out
    assert "no thread left behind" in out
    assert f"Every pattern works on {memory_url}" in out


def test_tour_defaults_to_polybus_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POLYBUS_URL", "memory://tour-from-env")
    assert main(["tour"]) == 0
    assert capsys.readouterr().out.startswith("polybus tour on memory://tour-from-env\n")


def test_tour_on_an_unknown_scheme_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["tour", "--url", "kafka://localhost"])
    captured = capsys.readouterr()
    assert code == 2
    assert "cannot connect: UnknownScheme: no transport for scheme 'kafka'" in captured.err
    assert "Traceback" not in captured.out + captured.err


def test_tour_says_what_did_not_arrive(
    memory_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a broker that loses the message published with key "a"
    publish = polybus.Router.publish

    def lossy(self: polybus.Router, body: Any, *, key: str, **options: Any) -> None:
        if key != "a":
            publish(self, body, key=key, **options)

    monkeypatch.setattr(polybus.Router, "publish", lossy)
    # When the tour runs
    code = main(["tour", "--url", memory_url, "--timeout", "0.5"])
    # Then it fails at the topic step, naming the missing message
    captured = capsys.readouterr()
    assert code == 1
    assert "'a.#' expected 2 message(s) but got only 1 (a.b.c)" in captured.err
    assert "step 4 failed" in captured.err
    assert "RPC" not in captured.out  # the tour stopped there


def test_polybus_command_runs_the_tour_and_exits(memory_url: str) -> None:
    # the real command, in its own process: it must exit (no thread left behind) with 0
    result = subprocess.run(
        [sys.executable, "-m", "polybus.cli", "tour", "--url", memory_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Every pattern works" in result.stdout


def test_version_and_help_read_as_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0
    assert capsys.readouterr().out.startswith(f"polybus {polybus.__version__} (Python 3.")
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert "``" not in help_text and "tour" in help_text and "bench" in help_text


def test_tour_leaves_no_queue_or_exchange_behind(capsys: pytest.CaptureFixture[str]) -> None:
    from polybus.transports.memory import get_broker

    # When the tour runs on a broker
    name = f"tour-clean-{os.urandom(4).hex()}"
    assert main(["tour", "--url", f"memory://{name}"]) == 0, capsys.readouterr().out
    # Then nothing it declared is left there
    broker = get_broker(name)
    assert broker.queues == {} and broker.exchanges == {}
