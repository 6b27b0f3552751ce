"""What the examples share: the ``--url`` option, the bus, and how a program ends.

Not a tutorial of its own: each example imports it so that it can show only its pattern.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import polybus

IN_PROCESS = (
    " [i] memory:// is a broker inside this one process: another program cannot see its"
    " messages. To run the sender and the receiver as two programs, give both a broker:"
    " --url redis://localhost:6379/0 or --url amqp://guest:guest@localhost:5672/"
    " (or set POLYBUS_URL)."
)


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """The example's argument parser, with ``--url`` (default ``$POLYBUS_URL``, else memory)."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("POLYBUS_URL") or "memory://",
        help="broker URL (default: $POLYBUS_URL, else memory://, inside this process only)",
    )
    return parser


def connect(url: str) -> polybus.Bus:
    """A bus on the URL; on memory://, a note that it is inside this process only."""
    if url.startswith("memory:"):
        print(IN_PROCESS, file=sys.stderr, flush=True)
    return polybus.connect(url)


def run(main: Callable[[], int]) -> None:
    """Run an example as a program: its exit status; CTRL+C and a receive that timed out end
    it with a line, not a traceback."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print(" [x] Interrupted")
        sys.exit(130)
    except polybus.ReceiveTimeout as exc:
        print(f" [!] Gave up: {exc}")
        sys.exit(1)
