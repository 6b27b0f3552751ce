"""``polybus purge QUEUE [--yes]``: drop a queue's ready messages, after asking (``--yes``: do
not ask). Messages delivered and not yet acked stay."""

from __future__ import annotations

import argparse

import polybus
from polybus.console.common import FAILED, OK, add_url, adopted, confirmed, run_on_bus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_url(parser)
    parser.add_argument("queue", metavar="QUEUE")
    parser.add_argument("--yes", action="store_true", help="purge without asking")


def run(args: argparse.Namespace) -> int:
    def purge(bus: polybus.Bus) -> int:
        queue = adopted(bus, args.queue)
        ready = queue.size()
        question = f"drop the {ready} ready messages of {args.queue!r} on {bus.url}?"
        if not confirmed(question, args.yes):
            print("nothing purged")
            return FAILED
        print(f"purged {queue.purge()} messages from {args.queue}")
        return OK

    return run_on_bus(args, purge)
