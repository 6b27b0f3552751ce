"""Random bodies and header trees: every send returns or raises a ``PolybusError`` in bounded
time, what is refused is exactly what not every broker can carry, and what arrives equals what
was sent."""

from __future__ import annotations

import asyncio
import enum
import json
import math
from typing import Any

import pytest

from polybus import PolybusError, SerializationError

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

BOUND = 10.0
EXAMPLES = 40


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2**40


class Count(int):
    """An int subclass of the user's own (pika's ``long`` was one)."""


LONE_SURROGATE = "\ud800"
texts = st.text(max_size=20) | st.sampled_from(["", "h\u00e9llo \u4e16\u754c", LONE_SURROGATE])
header_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from(list(Level))
    | st.integers().map(Count)
    | texts
    | st.floats(allow_nan=False, width=32)  # refused: not every broker carries floats
)
header_trees = st.dictionaries(
    texts,
    st.recursive(
        header_scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
        max_leaves=8,
    ),
    max_size=4,
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()  # NaN and infinities are refused: JSON has no words for them
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
bodies = st.binary(max_size=64) | texts | json_values


def carriable(value: Any) -> bool:
    """What every broker carries in a header (the rule, written out independently here)."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, str):
        return LONE_SURROGATE not in value
    if isinstance(value, list):
        return all(carriable(item) for item in value)
    if isinstance(value, dict):
        return all(carriable(k) and carriable(v) for k, v in value.items())
    return False


def encodable(body: Any) -> bool:
    if isinstance(body, bytes):
        return True
    try:
        json.dumps(body, allow_nan=False).encode()
    except ValueError:
        return False
    text = json.dumps(body, ensure_ascii=False)
    return LONE_SURROGATE not in text and not _has_nan(body)


def _plain(value: Any) -> bool:
    """Whether a received header holds plain values only (an ``IntEnum`` arrives an ``int``)."""
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    if isinstance(value, dict):
        return all(_plain(item) for item in value.values())
    return type(value) in (str, int, bool, type(None))


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_has_nan(item) for item in value)
    if isinstance(value, dict):
        return any(_has_nan(item) for item in value.values())
    return False


async def test_random_bodies_and_headers_arrive_as_sent_or_are_refused(connect):
    bus = await connect()
    q = bus.work_queue("fuzzed")
    await q.declare()
    sub = q.consume(prefetch=1)
    await sub.start()
    loop = asyncio.get_running_loop()

    async def roundtrip(body: Any, headers: dict[str, Any]) -> Any:
        try:
            await asyncio.wait_for(q.send(body, headers=headers), BOUND)
        except PolybusError as exc:
            return exc
        msg = await sub.receive(timeout=BOUND)
        await msg.ack()
        return msg

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(body=bodies, headers=header_trees)
    @example(body="x", headers={"level": Level.HIGH, "counts": [Count(3)], "n": {"l": Level.LOW}})
    def check(body: Any, headers: dict[str, Any]) -> None:
        sent = asyncio.run_coroutine_threadsafe(roundtrip(body, headers), loop)
        outcome = sent.result(BOUND * 3)
        should_arrive = carriable(headers) and encodable(body)
        if isinstance(outcome, PolybusError):
            assert isinstance(outcome, SerializationError), outcome
            assert not should_arrive, f"refused what every broker carries: {outcome}"
            return
        assert should_arrive, "accepted what some broker cannot carry"
        assert outcome.body == body and type(outcome.body) is type(body)
        assert outcome.headers == headers
        assert _plain(outcome.headers), outcome.headers

    try:
        await asyncio.to_thread(check)
    finally:
        await sub.close()
