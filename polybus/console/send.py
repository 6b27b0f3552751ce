"""``polybus send QUEUE BODY [--header NAME=VALUE ...] [--delay S]``: send one message to an
existing queue and say its id once the broker has confirmed it."""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

import polybus
from polybus.console.common import OK, USAGE, add_url, adopted, fail, run_on_bus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_url(parser)
    parser.add_argument("queue", metavar="QUEUE")
    parser.add_argument("body", metavar="BODY", help="sent as text, or with --json as JSON")
    parser.add_argument("--json", action="store_true", help="BODY is JSON: send its value")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a header, a str; NAME:=JSON for another type (n:=3, ok:=true); repeatable",
    )
    parser.add_argument("--delay", type=float, help="deliver no earlier than S seconds from now")
    parser.add_argument("--message-id", help="the message's id (default: a new one)")


def run(args: argparse.Namespace) -> int:
    try:
        body = json.loads(args.body) if args.json else args.body
        headers = dict(_header(text) for text in args.header)
    except ValueError as exc:
        fail(args, str(exc))
        return USAGE

    def send(bus: polybus.Bus) -> int:
        message_id = args.message_id or uuid.uuid4().hex
        queue = adopted(bus, args.queue)
        queue.send(body, headers=headers, delay=args.delay, message_id=message_id)
        print(f"sent {message_id} to {args.queue}")
        return OK

    return run_on_bus(args, send)


def _header(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` (a str) or ``NAME:=JSON``."""
    if ":=" in text and text.index(":=") + 1 == text.index("="):
        name, _, value = text.partition(":=")
        try:
            return name, json.loads(value)
        except ValueError:
            raise ValueError(f"--header {text!r}: after ':=' comes JSON (n:=3, ok:=true)") from None
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise ValueError(f"--header {text!r}: write NAME=VALUE (or NAME:=JSON)")
    return name, value
