"""Publish/subscribe, part 2: print every log line broadcast while this program runs.

python examples/receive_logs.py --url redis://localhost:6379/0      # CTRL+C to stop
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import polybus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("POLYBUS_URL", "memory://"))
    parser.add_argument("--count", type=int, help="exit after this many messages")
    parser.add_argument("--timeout", type=float, help="give up after waiting this many seconds")
    args = parser.parse_args(argv)

    with (
        polybus.connect(args.url) as bus,
        bus.pubsub("logs").subscribe() as logs,  # transient: its own queue, gone when we leave
    ):
        print(" [*] Waiting for logs. To exit press CTRL+C", flush=True)
        for _ in range(args.count) if args.count else itertools.count():
            print(f" [x] {logs.receive(timeout=args.timeout).body!r}", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("Interrupted")
