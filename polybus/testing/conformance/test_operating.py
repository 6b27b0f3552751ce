"""Operating queues: reading them without consuming, their counts, listing them, and a
queue's dead letters — why each died, replayed or discarded — the same on every transport."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from polybus import CapabilityMissing, InvalidArgument, RetryPolicy
from polybus.core.headers import DEAD_REASON, RETRIES
from polybus.testing.conformance._receive import drain, receive_until_quiet


async def rejected(bus: Any, queue: Any, bodies: list[Any], dead: int | None = None) -> list[str]:
    """Send ``bodies`` and reject each, until ``dead`` (all of them) are dead letters: their
    message ids, in order."""
    for index, body in enumerate(bodies):
        await queue.send(body, message_id=f"{queue.name}-{index}")
    async with queue.consume(prefetch=len(bodies)) as sub:
        for _ in bodies:
            await (await sub.receive(timeout=10)).reject()
    await dead_count(queue, len(bodies) if dead is None else dead)  # moved a moment later
    return [f"{queue.name}-{index}" for index in range(len(bodies))]


async def dead_count(queue: Any, expected: int) -> None:
    """Wait until the queue has ``expected`` dead letters (a broker may move them later)."""
    for _ in range(100):
        if await queue.dead_letters.count() == expected:
            return
        await asyncio.sleep(0.05)
    assert await queue.dead_letters.count() == expected


# -- peek and stats -------------------------------------------------------------------------


@pytest.mark.requires("peek")
async def test_peek_shows_the_waiting_messages_in_order_and_leaves_them_as_they_were(connect):
    bus = await connect()
    q = bus.work_queue("peeked")
    for n in range(3):
        await q.send({"n": n}, headers={"trace": f"t-{n}"}, message_id=f"m-{n}")
    peeked = await q.peek(2)
    assert [m.body for m in peeked] == [{"n": 0}, {"n": 1}]
    assert [m.message_id for m in peeked] == ["m-0", "m-1"]
    assert peeked[0].headers["trace"] == "t-0"
    assert await q.size() == 3
    async with q.consume(prefetch=3) as sub:
        first = await sub.receive(timeout=5)
        assert (first.body, first.redelivered) == ({"n": 0}, False)
        assert await drain(sub, 2) == [{"n": 1}, {"n": 2}]
        await first.ack()
    assert await q.peek() == []


@pytest.mark.requires("peek")
async def test_peek_skips_what_a_consumer_holds(connect):
    bus = await connect()
    q = bus.work_queue("peeked-held")
    await q.send_many(["held", "waiting"])
    async with q.consume(prefetch=1) as sub:
        held = await sub.receive(timeout=5)
        assert [m.body for m in await q.peek(5)] == ["waiting"]
        await held.ack()


async def test_a_broker_that_cannot_peek_says_so(connect):
    bus = await connect()
    if bus.capabilities.peek:
        pytest.skip(f"{bus.url} peeks (the tests above)")
    q = bus.work_queue("not-peeked")
    await q.send("still here")
    with pytest.raises(CapabilityMissing, match="without consuming"):
        await q.peek()
    assert await q.size() == 1


async def test_peek_limits_are_checked(connect):
    bus = await connect()
    q = bus.work_queue("peek-limits")
    for wrong in (0, -1, "3", 1.5, True, 70_000):
        with pytest.raises(InvalidArgument, match="limit"):
            await q.peek(wrong)


async def test_stats_count_ready_and_unacked_messages_and_consumers(connect):
    bus = await connect()
    q = bus.work_queue("counted")
    await q.send_many(["a", "b", "c"])
    async with q.consume(prefetch=1) as sub:
        msg = await sub.receive(timeout=5)
        stats = await q.stats()
        assert stats.name == q.name
        assert stats.ready == 2
        assert stats.unacked in (1, None)  # None: the broker does not say
        assert stats.consumers in (1, None)
        await msg.ack()
    for _ in range(100):  # the broker's counts catch up with what the closed consumer returned
        stats = await q.stats()
        if (stats.ready, stats.unacked or 0) == (2, 0):
            break
        await asyncio.sleep(0.05)
    assert (stats.ready, stats.unacked or 0) == (2, 0)


async def test_purge_drops_the_waiting_messages_and_says_how_many(connect):
    bus = await connect()
    q = bus.work_queue("purged")
    await q.send_many(["held", "a", "b"])
    async with q.consume(prefetch=1) as sub:
        held = await sub.receive(timeout=5)
        assert await q.purge() == 2
        assert await q.size() == 0
        await held.nack(requeue=True)  # what a consumer held was not waiting: it stays
    for _ in range(100):
        if await q.size() == 1:
            break
        await asyncio.sleep(0.05)
    assert await q.size() == 1
    assert await q.purge() == 1


@pytest.mark.requires("list_queues")
async def test_the_queues_of_a_namespace_are_listed_by_their_names(connect, target):
    bus = await connect()
    other = await connect(target.harness.url(f"{target.namespace}-other"))
    await bus.work_queue("listed").declare()
    elsewhere = other.work_queue("not-here", dead_letter=None)
    await elsewhere.declare()
    try:
        names = await bus.queue_names()
        assert {"listed", "listed.dead"} <= set(names)
        assert "not-here" not in names and names == sorted(names)
        assert "not-here" in await other.queue_names()
    finally:
        await elsewhere.delete()


async def test_a_broker_that_cannot_list_queues_says_so(connect):
    bus = await connect()
    if bus.capabilities.list_queues:
        pytest.skip(f"{bus.url} lists its queues (the test above)")
    with pytest.raises(CapabilityMissing, match="cannot list queues"):
        await bus.queue_names()


# -- dead letters ---------------------------------------------------------------------------


@pytest.mark.requires("dead_letter", "peek")
async def test_dead_letters_are_peeked_with_why_each_died(connect):
    bus = await connect()
    q = bus.work_queue("why")

    def handle(msg: Any) -> None:
        raise ValueError(f"cannot ship {msg.body}")

    await q.worker(handle, retries=RetryPolicy(max_retries=1, backoff=0))
    await q.send("parcel", message_id="p-1", headers={"trace": "t-1"})
    await dead_count(q, 1)
    [letter] = await q.dead_letters.peek()
    assert (letter.body, letter.message_id, letter.headers["trace"]) == ("parcel", "p-1", "t-1")
    assert (letter.reason, letter.died_on, letter.retries) == ("retries-exhausted", q.name, 1)
    assert (letter.error, letter.error_message) == ("ValueError", "cannot ship parcel")
    assert letter.died_at is not None
    assert await q.dead_letters.count() == 1  # still there


@pytest.mark.requires("dead_letter")
async def test_replay_sends_every_dead_letter_back_with_its_retry_count_reset(connect):
    bus = await connect()
    q = bus.work_queue("replayed")
    failing = True

    def handle(msg: Any) -> None:
        if failing:
            raise RuntimeError("down")

    worker = await q.worker(handle, retries=RetryPolicy(max_retries=1, backoff=0))
    for n in range(3):
        await q.send({"n": n}, message_id=f"r-{n}", headers={"trace": n})
    await dead_count(q, 3)
    await worker.close()
    assert await q.dead_letters.replay() == 3
    assert await q.dead_letters.count() == 0
    async with q.consume(prefetch=3) as sub:
        back = await receive_until_quiet(sub, ack=True)
    assert sorted(m.message_id for m in back) == ["r-0", "r-1", "r-2"]
    for msg in back:
        assert msg.headers["trace"] == msg.body["n"]
        assert RETRIES not in msg.headers and DEAD_REASON not in msg.headers
        assert not any(name.startswith(("x-polybus-dead", "x-death")) for name in msg.headers)


@pytest.mark.requires("dead_letter")
async def test_replay_and_discard_choose_by_id_or_by_predicate_and_leave_the_others(connect):
    bus = await connect()
    q = bus.work_queue("chosen")
    ids = await rejected(bus, q, [{"n": n} for n in range(5)])
    assert await q.dead_letters.replay(ids=[ids[1]]) == 1
    assert await q.dead_letters.replay(where=lambda letter: letter.body["n"] == 3) == 1
    assert await q.dead_letters.discard(ids=[ids[0], "no-such-id"]) == 1
    assert await q.dead_letters.replay(ids=[ids[2]], where=lambda letter: False) == 0
    await dead_count(q, 2)
    async with q.consume(prefetch=5) as sub:
        assert sorted(m.body["n"] for m in await receive_until_quiet(sub, ack=True)) == [1, 3]
    async with bus.work_queue("chosen.dead").consume(prefetch=5) as dead:
        left = await receive_until_quiet(dead, ack=True)
    assert sorted(m.body["n"] for m in left) == [2, 4]


@pytest.mark.requires("dead_letter")
async def test_discard_drops_every_dead_letter(connect):
    bus = await connect()
    q = bus.work_queue("discarded")
    await rejected(bus, q, ["a", "b", "c"])
    assert await q.dead_letters.discard() == 3
    assert await q.dead_letters.count() == 0
    assert await q.dead_letters.discard() == 0
    assert await q.size() == 0


@pytest.mark.requires("dead_letter")
async def test_an_interrupted_replay_loses_nothing(connect):
    # Given five dead letters, and a replay whose selection fails on the third
    bus = await connect()
    q = bus.work_queue("interrupted")
    await rejected(bus, q, list(range(5)))
    looked: list[int] = []

    def choose(letter: Any) -> bool:
        looked.append(letter.body)
        if len(looked) == 3:
            raise LookupError("selection failed")
        return True

    with pytest.raises(LookupError):
        await q.dead_letters.replay(where=choose)
    # Then what was replayed is in the queue, the rest still dead letters: all five, once
    async with q.consume(prefetch=5) as sub:
        replayed = [m.body for m in await receive_until_quiet(sub, ack=True)]
    await dead_count(q, 5 - len(replayed))
    assert await q.dead_letters.replay() == 5 - len(replayed)
    async with q.consume(prefetch=5) as sub:
        rest = [m.body for m in await receive_until_quiet(sub, ack=True)]
    assert len(replayed) <= 2 and sorted(replayed + rest) == [0, 1, 2, 3, 4]


@pytest.mark.requires("dead_letter")
async def test_a_shared_dead_letter_queue_is_operated_queue_by_queue(connect):
    bus = await connect()
    first = bus.work_queue("first", dead_letter="shared-graveyard")
    second = bus.work_queue("second", dead_letter="shared-graveyard")
    await rejected(bus, first, ["one"])
    await rejected(bus, second, ["two"], dead=2)
    assert await first.dead_letters.replay() == 1
    async with second.consume() as sub:
        assert await receive_until_quiet(sub) == []
    assert await second.dead_letters.discard() == 1
    assert await first.dead_letters.count() == 0
    async with first.consume() as sub:
        assert [m.body for m in await receive_until_quiet(sub, ack=True)] == ["one"]


async def test_dead_letters_of_a_queue_without_any_are_refused(connect):
    bus = await connect()
    q = bus.work_queue("no-graveyard", dead_letter=None)
    with pytest.raises(InvalidArgument, match="no dead-letter queue"):
        await q.dead_letters.count()
    with pytest.raises(InvalidArgument, match="message ids"):
        await bus.work_queue("graveyard-ids").dead_letters.replay(ids="one-id")
