"""Topics, part 1: publish a log line with a "<facility>.<severity>" routing key.

python examples/emit_log_topic.py --url redis://localhost:6379/0 kern.critical "Disk full"
"""

from __future__ import annotations

from _tutorial import arguments, connect, run


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("routing_key", nargs="?", default="anonymous.info")
    parser.add_argument("message", nargs="*", default=["Hello World!"])
    args = parser.parse_args(argv)
    message = " ".join(args.message)

    with connect(args.url) as bus:
        bus.router("topic_logs", kind="topic").publish(message, key=args.routing_key)
        print(f" [x] Sent {args.routing_key!r}:{message!r}")
    return 0


if __name__ == "__main__":
    run(main)
