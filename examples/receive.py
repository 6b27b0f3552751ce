"""Hello World, part 2: print the messages of the queue "hello".

python examples/receive.py --url redis://localhost:6379/0      # CTRL+C to stop
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

    with polybus.connect(args.url) as bus, bus.work_queue("hello").consume() as messages:
        print(" [*] Waiting for messages. To exit press CTRL+C", flush=True)
        for _ in range(args.count) if args.count else itertools.count():
            msg = messages.receive(timeout=args.timeout)  # polybus.ReceiveTimeout if none came
            print(f" [x] Received {msg.body!r}", flush=True)
            msg.ack()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("Interrupted")
