"""``polybus listen QUEUE | --exchange X [--key PATTERN]``: print messages as they arrive, one
JSON line each, until Ctrl-C (or SIGTERM), which stops cleanly with 0.

From a queue, listening takes the messages: each is acked once printed (a message is never
lost: one printed and not yet acked when the listener stops goes back to the queue). From an
exchange, it listens on a queue of its own that is gone when it stops, bound with ``--key``
(default ``#``: everything a fanout or topic exchange routes; a direct exchange needs the key).
"""

from __future__ import annotations

import argparse
import sys

import polybus
from polybus.console.common import OK, USAGE, add_url, adopted, as_json, fail, run_on_bus

WAIT = 1.0
"""Seconds each receive waits: how soon Ctrl-C is seen between messages."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_url(parser)
    parser.add_argument("queue", metavar="QUEUE", nargs="?", help="take the queue's messages")
    parser.add_argument("--exchange", metavar="X", help="or listen to what an exchange routes")
    parser.add_argument(
        "--key",
        action="append",
        metavar="PATTERN",
        help="with --exchange: routing key or topic pattern (default '#'); repeatable",
    )
    parser.add_argument("--count", type=int, help="stop after this many messages")


def run(args: argparse.Namespace) -> int:
    if (args.queue is None) == (args.exchange is None):
        fail(args, "give a QUEUE or --exchange X, not both or neither")
        return USAGE
    if args.key and args.exchange is None:
        fail(args, "--key goes with --exchange")
        return USAGE
    if args.count is not None and args.count < 1:
        fail(args, f"--count must be at least 1, not {args.count}")
        return USAGE
    return run_on_bus(args, lambda bus: _listen(bus, args))


def _listen(bus: polybus.Bus, args: argparse.Namespace) -> int:
    if args.exchange is not None:
        keys = args.key or ["#"]
        router = bus.router(args.exchange, "topic", declare=False)
        subscription = router.subscribe(keys)
        source = f"exchange {args.exchange!r} (keys {', '.join(keys)})"
    else:
        subscription = adopted(bus, args.queue).consume(prefetch=100)
        source = f"queue {args.queue!r} (taking its messages)"
    printed = 0
    try:
        with subscription:
            print(f"listening to {source} on {bus.url}; Ctrl-C to stop", file=sys.stderr)
            while args.count is None or printed < args.count:
                try:
                    message = subscription.receive(timeout=WAIT)
                except polybus.ReceiveTimeout:
                    continue
                print(as_json(message), flush=True)
                message.ack()
                printed += 1
    except KeyboardInterrupt:
        pass  # the subscription closed: what was not acked went back
    return OK
