"""RPC, part 2: ask the server for fib(n) and wait for the answer.

python examples/rpc_client.py --url amqp://guest:guest@localhost:5672/ 30
"""

from __future__ import annotations

from _tutorial import arguments, connect, run

import polybus


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a reply")
    parser.add_argument("n", type=int, nargs="?", default=30)
    args = parser.parse_args(argv)

    with connect(args.url) as bus:
        print(f" [x] Requesting fib({args.n})")
        try:
            response = bus.rpc("rpc_queue").call(args.n, timeout=args.timeout)
        except polybus.RemoteError as exc:  # the server's handler raised
            print(f" [!] The server failed: {exc}")
            return 1
        except polybus.RpcTimeout:
            print(f" [!] No reply within {args.timeout}s: is rpc_server.py running?")
            return 1
        print(f" [.] Got {response!r}")
    return 0


if __name__ == "__main__":
    run(main)
