"""Topics, part 2: print the log lines whose routing key matches one of the patterns given.

A pattern's words are matched one by one: ``*`` stands for exactly one word, ``#`` for zero or
more, so ``kern.#`` gets ``kern``, ``kern.info`` and ``kern.disk.full``; ``#`` alone gets all.

    python examples/receive_logs_topic.py --url redis://localhost:6379/0 "kern.*" "*.critical"
"""

from __future__ import annotations

import itertools

from _tutorial import arguments, connect, run


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--count", type=int, help="exit after this many messages")
    parser.add_argument("--timeout", type=float, help="give up after waiting this many seconds")
    parser.add_argument("binding_keys", nargs="+", metavar="pattern", help='e.g. "kern.*" "#"')
    args = parser.parse_args(argv)

    with (
        connect(args.url) as bus,
        bus.router("topic_logs", kind="topic").subscribe(args.binding_keys) as logs,
    ):
        print(" [*] Waiting for logs. To exit press CTRL+C", flush=True)
        for _ in range(args.count) if args.count else itertools.count():
            msg = logs.receive(timeout=args.timeout)
            print(f" [x] {msg.key!r}:{msg.body!r}", flush=True)
    return 0


if __name__ == "__main__":
    run(main)
