"""What a bench run is made of: the plan (how many messages per case) and the result rows."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from polybus.core.url import redact

# pattern (as chosen with --patterns) -> the cases it measures, in table order
PATTERNS: dict[str, tuple[str, ...]] = {
    "workqueue": ("workqueue-send", "workqueue-send-each", "workqueue-consume"),
    "latency": ("latency",),
    "fanout": ("fanout",),
    "rpc": ("rpc-seq", "rpc-32"),
    "delay": ("delay",),
}
CASES: tuple[str, ...] = tuple(case for cases in PATTERNS.values() for case in cases)
SUBSCRIBERS = 4  # fanout
RPC_IN_FLIGHT = 32
BATCH = 100  # send_many batch, publishes in flight, consumer prefetch
TIMEOUT = 30.0  # a receive or call that waits longer than this fails the case (never a hang)
MAX_DELAY = 2.0  # delay: each message is delayed by a random 0 to this many seconds


@dataclass(frozen=True)
class Plan:
    """Message counts per case, all derived from ``--messages`` so a run is reproducible."""

    messages: int
    sizes: tuple[int, ...]
    patterns: tuple[str, ...]
    rate: float  # latency: messages per second offered
    repeat: int = 1  # runs of each case per client; the best is kept

    @property
    def warmup(self) -> int:
        return max(1, min(200, self.messages // 20))

    @property
    def each(self) -> int:
        """Messages sent one call at a time, each waited for (a fifth of the batched ones)."""
        return max(10, self.messages // 5)

    @property
    def fanout(self) -> int:
        """Messages published; each of the subscribers receives all of them."""
        return max(1, self.messages // SUBSCRIBERS)

    @property
    def latency(self) -> int:
        return max(10, self.messages // 10)

    @property
    def rpc(self) -> int:
        return max(RPC_IN_FLIGHT, self.messages // 10)

    @property
    def delayed(self) -> int:
        """Messages sent delayed (twice the work queue's: 10,000 by default)."""
        return max(10, self.messages * 2)

    @property
    def cases(self) -> tuple[str, ...]:
        return tuple(case for pattern in self.patterns for case in PATTERNS[pattern])


@dataclass
class Measurement:
    """What a client measured for one case: ``count`` messages in ``seconds``."""

    case: str
    count: int
    seconds: float
    mode: str
    latencies: list[float] = field(default_factory=list)  # seconds, one per message or call


@dataclass
class Result:
    """One row of the table, the JSON and the CSV."""

    broker: str
    client: str
    case: str
    size: int | None
    status: str = "ok"  # ok | unreachable | error
    detail: str = ""
    messages: int = 0
    seconds: float = 0.0
    msgs_per_s: float | None = None
    mb_per_s: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    vs_raw: float | None = None  # msgs/s divided by the raw client's msgs/s on the same broker
    mode: str = ""

    @classmethod
    def measured(cls, broker: str, client: str, size: int, m: Measurement) -> Result:
        rate = m.count / m.seconds if m.seconds > 0 else None
        result = cls(
            broker,
            client,
            m.case,
            size,
            messages=m.count,
            seconds=round(m.seconds, 6),
            msgs_per_s=rate,
            mb_per_s=rate * size / 1e6 if rate is not None else None,
            mode=m.mode,
        )
        if m.latencies:
            ordered = sorted(m.latencies)
            result.p50_ms, result.p95_ms, result.p99_ms = (
                percentile(ordered, q) * 1000 for q in (50, 95, 99)
            )
        return result

    def row(self) -> dict[str, Any]:
        return asdict(self)


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (no interpolation: a value that was measured)."""
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def with_namespace(url: str, namespace: str) -> str:
    """The URL with ``namespace=`` added to its query, so the bench's names never collide."""
    return f"{url}{'&' if '?' in url else '?'}namespace={namespace}"


def display_url(url: str) -> str:
    """The URL as shown in the table: no password, no query."""
    return redact(url.split("?", 1)[0])


def new_namespace() -> str:
    return f"bench{os.urandom(4).hex()}"


class Unreachable(Exception):
    """A suite could not reach its broker (or lacks its client library); the reason is shown."""


class Suite(Protocol):
    """One client on one broker: polybus's asyncio or blocking API, or a raw client."""

    client: str
    raw: bool  # the broker's own client: the denominator of the "vs raw" ratio
    patterns: frozenset[str]

    def open(self) -> None:
        """Connect, or raise ``Unreachable`` saying why."""

    def run(self, pattern: str, size: int, plan: Plan) -> list[Measurement]:
        """Measure one pattern at one body size on fresh queues, deleting them afterwards."""

    def close(self) -> None: ...
