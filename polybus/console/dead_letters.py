"""``polybus dead-letters QUEUE [-n N] [--replay | --discard] [--id ID ...]``: a queue's dead
letters, one JSON line each with why it died — or replayed to the queue (their retry count
reset), or discarded; all of them, or those with the ids given. Discarding them all asks first
(``--yes``: do not ask)."""

from __future__ import annotations

import argparse

import polybus
from polybus.console.common import FAILED, OK, add_url, as_json, confirmed, run_on_bus
from polybus.core.workqueue import dead_letter_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_url(parser)
    parser.add_argument("queue", metavar="QUEUE", help="the queue whose dead letters these are")
    act = parser.add_mutually_exclusive_group()
    act.add_argument("--replay", action="store_true", help="send them back to QUEUE")
    act.add_argument("--discard", action="store_true", help="drop them")
    parser.add_argument(
        "--id", action="append", metavar="ID", help="only the dead letter with this message id"
    )
    parser.add_argument("-n", type=int, default=10, help="how many to show, at most (10)")
    parser.add_argument(
        "--dead-letter-queue", metavar="NAME", help="where they are (default: QUEUE.dead)"
    )
    parser.add_argument("--yes", action="store_true", help="discard them all without asking")


def run(args: argparse.Namespace) -> int:
    def operate(bus: polybus.Bus) -> int:
        where = args.dead_letter_queue or dead_letter_name(args.queue)
        letters = bus.work_queue(args.queue, declare=False, dead_letter=where).dead_letters
        if args.replay:
            count = letters.replay(ids=args.id)
            print(f"replayed {count} dead letters to {args.queue}")
        elif args.discard:
            question = f"discard every dead letter of {args.queue!r} on {bus.url}?"
            if args.id is None and not confirmed(question, args.yes):
                print("nothing discarded")
                return FAILED
            print(f"discarded {letters.discard(ids=args.id)} dead letters of {args.queue}")
        else:
            for letter in letters.peek(args.n):
                print(as_json(letter), flush=True)
        return OK

    return run_on_bus(args, operate)
