"""Hello World, part 1: send one message to the queue "hello".

python examples/send.py --url redis://localhost:6379/0 "Hello World!"
"""

from __future__ import annotations

from _tutorial import arguments, connect, run


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("message", nargs="?", default="Hello World!")
    args = parser.parse_args(argv)

    with connect(args.url) as bus:
        bus.work_queue("hello").send(args.message)  # waits in the queue until someone takes it
        print(f" [x] Sent {args.message!r}")
    return 0


if __name__ == "__main__":
    run(main)
