"""``polybus bench``: the same workloads on every broker, side by side.

Work-queue throughput (send, then consume with acks), send→receive latency at a steady rate,
fanout to four subscribers, and RPC round trips (one at a time and 32 in flight), for each body
size, on each broker URL — through polybus's asyncio API (and its blocking API for the work
queue), and with ``--baseline`` through the brokers' own clients, so the cost of polybus shows
as a ratio. Exit status: 0 when every reachable broker was measured (an unreachable one is a line
in the output, not a failure), 1 when a case failed on a reachable broker, 2 on bad arguments.

This module is imported whenever ``polybus`` runs, so it imports the bench's machinery (rich,
matplotlib, the broker clients) only inside ``run``.
"""

from __future__ import annotations

import argparse

from polybus.bench.model import PATTERNS

DEFAULT_SIZES = (128, 512, 1024, 10240)
DEFAULT_MESSAGES = 5000
QUICK_MESSAGES = 200
DEFAULT_RATE = 500.0


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: sizes are byte counts, e.g. 128,1024"
        ) from None
    if not sizes or min(sizes) < 8:
        raise argparse.ArgumentTypeError(f"{text!r}: give sizes of at least 8 bytes")
    return sizes


def _patterns(text: str) -> tuple[str, ...]:
    patterns = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [p for p in patterns if p not in PATTERNS]
    if unknown or not patterns:
        raise argparse.ArgumentTypeError(
            f"{text!r}: choose among {', '.join(PATTERNS)} (comma-separated)"
        )
    return patterns


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be positive")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        action="append",
        dest="urls",
        metavar="URL",
        help="broker URL to measure (repeatable); default: memory://, fakeredis://, "
        "redis://127.0.0.1:6379, amqp://guest:guest@127.0.0.1:5672/ and nats://127.0.0.1:4222"
        " — each one that does not answer is reported as unreachable",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        help=f"body sizes in bytes (default {','.join(map(str, DEFAULT_SIZES))})",
    )
    parser.add_argument(
        "--messages",
        type=_positive,
        default=None,
        help=f"work-queue messages per case; the other cases scale from it "
        f"(default {DEFAULT_MESSAGES}, {QUICK_MESSAGES} with --quick)",
    )
    parser.add_argument(
        "--patterns",
        type=_patterns,
        default=tuple(PATTERNS),
        help=f"which workloads (default {','.join(PATTERNS)})",
    )
    parser.add_argument(
        "--rate",
        type=_rate,
        default=DEFAULT_RATE,
        help=f"latency case: messages per second offered (default {DEFAULT_RATE:g})",
    )
    parser.add_argument(
        "--repeat",
        type=_positive,
        default=1,
        help="runs of each case per client, the best kept (default 1; 3 for figures to quote)",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also run the raw clients (redis-py Streams, pika, aio-pika, nats-py, kombu) on the"
        " same workloads",
    )
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--csv", metavar="FILE", help="write the results as CSV")
    parser.add_argument(
        "--plot", metavar="FILE.png", help="draw a grouped bar chart per case (matplotlib)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: {QUICK_MESSAGES} messages and sizes 128,1024 unless given",
    )


def run(args: argparse.Namespace) -> int:
    from polybus.bench.cli import main

    return main(args)
