"""Routing, part 2: print the log lines whose severity is one of those given.

python examples/receive_logs_direct.py --url redis://localhost:6379/0 warning error
"""

from __future__ import annotations

import itertools

from _tutorial import arguments, connect, run


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--count", type=int, help="exit after this many messages")
    parser.add_argument("--timeout", type=float, help="give up after waiting this many seconds")
    parser.add_argument("severities", nargs="+", metavar="severity", help="info, warning, error")
    args = parser.parse_args(argv)

    with (
        connect(args.url) as bus,
        # one binding per severity: a message comes when its key equals one of them
        bus.router("direct_logs", kind="direct").subscribe(args.severities) as logs,
    ):
        print(" [*] Waiting for logs. To exit press CTRL+C", flush=True)
        for _ in range(args.count) if args.count else itertools.count():
            msg = logs.receive(timeout=args.timeout)
            print(f" [x] {msg.key!r}:{msg.body!r}", flush=True)
    return 0


if __name__ == "__main__":
    run(main)
