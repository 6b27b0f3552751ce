"""The ``polybus`` command: ``tour`` (every pattern end to end) and ``bench`` (broker comparison).

Each subcommand lives in its own module, imported only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "tour": ("polybus.tour", "run every pattern end to end on a URL and show what happens"),
    "bench": ("polybus.bench", "compare brokers side by side on the same workloads"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="polybus", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        module.add_arguments(commands.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    result: int = modules[args.command].run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
