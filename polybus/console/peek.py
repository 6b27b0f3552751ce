"""``polybus peek QUEUE [-n N]``: the next messages of a queue, one JSON line each, left in the
queue (a broker that cannot read a queue without consuming it says so)."""

from __future__ import annotations

import argparse

import polybus
from polybus.console.common import OK, add_url, adopted, as_json, run_on_bus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_url(parser)
    parser.add_argument("queue", metavar="QUEUE")
    parser.add_argument("-n", type=int, default=10, help="how many messages, at most (10)")


def run(args: argparse.Namespace) -> int:
    def peek(bus: polybus.Bus) -> int:
        for message in adopted(bus, args.queue).peek(args.n):
            print(as_json(message), flush=True)
        return OK

    return run_on_bus(args, peek)
