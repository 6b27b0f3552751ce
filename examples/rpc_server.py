"""RPC, part 1: answer Fibonacci requests on the queue "rpc_queue".

Run several servers and they share the calls. CTRL+C (or SIGTERM) stops a server gracefully:
the call it is answering is finished first.

    python examples/rpc_server.py --url amqp://guest:guest@localhost:5672/
"""

from __future__ import annotations

import threading

from _tutorial import arguments, connect, run


def fib(n: int) -> int:
    if n < 0:
        raise ValueError(f"fib({n}) is not defined")
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--count", type=int, help="exit after answering this many requests")
    args = parser.parse_args(argv)
    answered = 0
    enough = threading.Event()

    def on_request(n: int) -> int:
        nonlocal answered
        print(f" [.] fib({n})", flush=True)
        answered += 1
        if answered == args.count:
            enough.set()  # the reply is still sent: closing the bus lets this call finish
        return fib(n)  # the return value is the reply; an exception reaches the caller

    with connect(args.url) as bus:
        bus.rpc("rpc_queue").serve(on_request)
        print(" [x] Awaiting RPC requests", flush=True)
        if args.count:
            enough.wait()
        else:
            bus.run()  # until CTRL+C or SIGTERM
    return 0


if __name__ == "__main__":
    run(main)
