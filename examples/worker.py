"""Work queues, part 2: take tasks one at a time and ack each only when it is done.

Run several workers: they share the queue, and prefetch=1 gives a task to a worker only when it
is free (fair dispatch). Stop one mid-task with CTRL+C and its task goes to another: nothing is
lost, because a task leaves the queue only when acked.

    python examples/worker.py --url amqp://guest:guest@localhost:5672/
"""

from __future__ import annotations

import itertools
import time

from _tutorial import arguments, connect, run


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--count", type=int, help="exit after this many tasks")
    parser.add_argument("--timeout", type=float, help="give up after waiting this many seconds")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds of work per '.'")
    args = parser.parse_args(argv)

    with connect(args.url) as bus:
        tasks = bus.work_queue("task_queue")
        with tasks.consume(prefetch=1) as pending:  # at most one unacked task: fair dispatch
            print(" [*] Waiting for messages. To exit press CTRL+C", flush=True)
            for _ in range(args.count) if args.count else itertools.count():
                msg = pending.receive(timeout=args.timeout)
                print(f" [x] Received {msg.body!r}", flush=True)
                time.sleep(msg.body.count(".") * args.delay)
                print(" [x] Done", flush=True)
                msg.ack()  # only now does the task leave the queue
    return 0


if __name__ == "__main__":
    run(main)
