"""The ``polybus`` command: ``tour`` (every pattern end to end), ``bench`` (broker comparison)
and the commands that operate queues (``polybus.console``).

Each subcommand lives in its own module, imported only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
from typing import NoReturn

import polybus
from polybus.core.url import redact

# subcommand -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "tour": ("polybus.tour", "run every pattern end to end on a URL and show what happens"),
    "bench": ("polybus.bench", "compare brokers side by side on the same workloads"),
    "queues": ("polybus.console.queues", "the queues, their ready/unacked/consumers/dead counts"),
    "peek": ("polybus.console.peek", "show a queue's next messages without taking them"),
    "send": ("polybus.console.send", "send a message to a queue"),
    "listen": ("polybus.console.listen", "print a queue's or an exchange's messages as they come"),
    "purge": ("polybus.console.purge", "drop a queue's ready messages (asks first)"),
    "dead-letters": (
        "polybus.console.dead_letters",
        "a queue's dead letters and why they died; replay or discard them",
    ),
}


DESCRIPTION = "polybus: one messaging API on RabbitMQ, Redis, NATS or memory, chosen by a URL."


class _Parser(argparse.ArgumentParser):
    """Says what is wrong with the arguments without showing a URL's password (argparse
    quotes what it did not expect, a URL typed in the wrong place, say)."""

    def error(self, message: str) -> NoReturn:
        super().error(" ".join(redact(word) for word in message.split(" ")))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _Parser(prog="polybus", description=DESCRIPTION)
    parser.add_argument(
        "--version",
        action="version",
        version=f"polybus {polybus.__version__} (Python {platform.python_version()})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((arg for arg in argv if arg in COMMANDS), None)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        subparser = commands.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # only the command that runs is imported (and may need its extra)
            modules[name] = importlib.import_module(module_name)
            modules[name].add_arguments(subparser)
    args = parser.parse_args(argv)
    result: int = modules[args.command].run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
