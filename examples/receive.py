"""Hello World, part 2: print the messages of the queue "hello".

python examples/receive.py --url redis://localhost:6379/0      # CTRL+C to stop
"""

from __future__ import annotations

import itertools

from _tutorial import arguments, connect, run


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--count", type=int, help="exit after this many messages")
    parser.add_argument("--timeout", type=float, help="give up after waiting this many seconds")
    args = parser.parse_args(argv)

    with connect(args.url) as bus, bus.work_queue("hello").consume() as messages:
        print(" [*] Waiting for messages. To exit press CTRL+C", flush=True)
        for _ in range(args.count) if args.count else itertools.count():
            msg = messages.receive(timeout=args.timeout)  # polybus.ReceiveTimeout if none came
            print(f" [x] Received {msg.body!r}", flush=True)
            msg.ack()
    return 0


if __name__ == "__main__":
    run(main)
