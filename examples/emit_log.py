"""Publish/subscribe, part 1: broadcast a log line to every receive_logs.py running now.

python examples/emit_log.py --url redis://localhost:6379/0 "info: Hello World!"
"""

from __future__ import annotations

from _tutorial import arguments, connect, run


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("message", nargs="*", default=["info: Hello World!"])
    args = parser.parse_args(argv)
    message = " ".join(args.message)

    with connect(args.url) as bus:
        bus.pubsub("logs").publish(message)  # a fanout: nobody listening means nobody gets it
        print(f" [x] Sent {message!r}")
    return 0


if __name__ == "__main__":
    run(main)
