"""Routing, part 1: publish a log line with its severity as the routing key.

python examples/emit_log_direct.py --url redis://localhost:6379/0 error "Disk full"
"""

from __future__ import annotations

from _tutorial import arguments, connect, run


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("severity", nargs="?", default="info")
    parser.add_argument("message", nargs="*", default=["Hello World!"])
    args = parser.parse_args(argv)
    message = " ".join(args.message)

    with connect(args.url) as bus:
        bus.router("direct_logs", kind="direct").publish(message, key=args.severity)
        print(f" [x] Sent {args.severity!r}:{message!r}")
    return 0


if __name__ == "__main__":
    run(main)
