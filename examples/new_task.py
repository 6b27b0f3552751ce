"""Work queues, part 1: send a task; each '.' in it is one second of work for a worker.

python examples/new_task.py --url amqp://guest:guest@localhost:5672/ "A hard task....."
"""

from __future__ import annotations

from _tutorial import arguments, connect, run


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("message", nargs="*", default=["Hello World!"])
    args = parser.parse_args(argv)
    message = " ".join(args.message)

    with connect(args.url) as bus:
        tasks = bus.work_queue("task_queue")  # durable: the queue survives a broker restart
        tasks.send(message, persistent=True)  # so does the message (persistent is the default)
        print(f" [x] Sent {message!r}")
    return 0


if __name__ == "__main__":
    run(main)
