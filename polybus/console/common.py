"""What the queue commands share: ``--url``, a bus that declares nothing, a message as one JSON
line, and the exit codes (documented in docs/operating.md).

Every command uses queues as they are (``declare=False``): looking at a broker never creates a
queue. Errors are polybus's own, with passwords hidden, printed on one line."""

from __future__ import annotations

import argparse
import base64
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import polybus
from polybus.core.dead_letter_queue import DeadLetter
from polybus.core.message import BaseMessage

OK = 0
FAILED = 1
"""The broker refused, or the user declined (purge not confirmed)."""
USAGE = 2
"""A bad argument or URL, or a missing extra (argparse's own code for bad arguments)."""
UNREACHABLE = 3
"""The broker could not be reached, or stopped answering."""
NOT_FOUND = 4
"""The queue or exchange does not exist."""
UNSUPPORTED = 5
"""The broker cannot do it (listing or peeking on RabbitMQ, say)."""
INTERRUPTED = 130
"""Ctrl-C before the command finished (``listen`` ends on Ctrl-C with 0)."""

_CODES: tuple[tuple[type[polybus.PolybusError], int], ...] = (
    (polybus.InvalidArgument, USAGE),
    (polybus.ConfigurationError, USAGE),
    (polybus.SerializationError, USAGE),
    (polybus.ConnectionFailed, UNREACHABLE),
    (polybus.NotFound, NOT_FOUND),
    (polybus.CapabilityMissing, UNSUPPORTED),
)


def add_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="broker URL (default: $POLYBUS_URL, else memory://), e.g. redis://localhost"
    )


def exit_code(error: polybus.PolybusError) -> int:
    return next((code for kind, code in _CODES if isinstance(error, kind)), FAILED)


def run_on_bus(args: argparse.Namespace, command: Callable[[polybus.Bus], int]) -> int:
    """Connect to ``--url``, run ``command`` on the bus, close it: its exit code, or the one
    the error it raised stands for (the error said on stderr)."""
    try:
        with _stopped_by_sigterm(), polybus.connect(args.url) as bus:
            return command(bus)
    except polybus.PolybusError as exc:
        fail(args, str(exc))
        return exit_code(exc)
    except KeyboardInterrupt:
        return INTERRUPTED


def fail(args: argparse.Namespace, why: str) -> None:
    print(f"polybus {args.command}: {why}", file=sys.stderr)


def adopted(bus: polybus.Bus, name: str) -> polybus.WorkQueue:
    """The queue as it is, without its dead letters (``dead_letters`` names them)."""
    return bus.work_queue(name, declare=False, dead_letter=None)


def as_json(message: BaseMessage) -> str:
    """A message as one JSON line: its body as the value it decodes to (bytes, or a body that
    cannot be decoded, in ``body_base64``), its properties, and for a dead letter why it died."""
    line: dict[str, Any] = {
        "message_id": message.message_id,
        "exchange": message.exchange,
        "key": message.key,
        "content_type": message.content_type,
        "headers": message.headers,
        "timestamp": message.timestamp,
        "delivery_count": message.delivery_count,
        "redelivered": message.redelivered,
    }
    for name in ("correlation_id", "reply_to", "priority"):
        if getattr(message, name) is not None:
            line[name] = getattr(message, name)
    try:
        body = message.body
    except polybus.SerializationError:
        body = message.data
    if isinstance(body, bytes):
        line["body_base64"] = base64.b64encode(body).decode()
    else:
        line["body"] = body
    if isinstance(message, DeadLetter):
        line["dead"] = {
            "reason": message.reason,
            "queue": message.died_on,
            "error": message.error,
            "error_message": message.error_message,
            "at": message.died_at,
            "retries": message.retries,
        }
    return json.dumps(line, ensure_ascii=False, default=repr)


def confirmed(question: str, yes: bool) -> bool:
    """``--yes``, or the user's answer to ``question`` (no terminal, no answer: no)."""
    if yes:
        return True
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        return False
    return answer.strip().lower() in ("y", "yes")


@contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM stops a command as Ctrl-C does (a service manager's stop); only a program's
    main thread can handle signals (a command run on another thread is stopped otherwise)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
