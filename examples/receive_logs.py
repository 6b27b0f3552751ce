"""Publish/subscribe, part 2: print every log line broadcast while this program runs.

python examples/receive_logs.py --url redis://localhost:6379/0      # CTRL+C to stop
"""

from __future__ import annotations

import itertools

from _tutorial import arguments, connect, run


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--count", type=int, help="exit after this many messages")
    parser.add_argument("--timeout", type=float, help="give up after waiting this many seconds")
    args = parser.parse_args(argv)

    with (
        connect(args.url) as bus,
        bus.pubsub("logs").subscribe() as logs,  # transient: its own queue, gone when we leave
    ):
        print(" [*] Waiting for logs. To exit press CTRL+C", flush=True)
        for _ in range(args.count) if args.count else itertools.count():
            print(f" [x] {logs.receive(timeout=args.timeout).body!r}", flush=True)
    return 0


if __name__ == "__main__":
    run(main)
