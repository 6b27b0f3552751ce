"""Operating a queue's dead letters: see why each died, replay them to their queue, or discard
them — the same calls on every transport.

Reading (``peek``) leaves the dead letters where they are, so it needs a broker that can read a
queue without consuming it. Replaying and discarding consume the dead-letter queue on any broker:
the dead letters chosen are replayed (the copy confirmed in their queue before the dead letter is
acked) or acked, and the others are held unacked until the pass ends, then returned. A pass
interrupted anywhere loses nothing: what was not acked comes back to the dead-letter queue, and
at worst a message is in both queues.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from polybus.core.arguments import check_int
from polybus.core.errors import InvalidArgument
from polybus.core.headers import (
    DEAD_AT,
    DEAD_ERROR,
    DEAD_MESSAGE,
    DEAD_QUEUE,
    DEAD_REASON,
    DEATH,
    DEATH_HISTORY,
    RETRIES,
)
from polybus.core.limits import MAX_PREFETCH
from polybus.core.message import PeekedMessage
from polybus.core.retry import retries_of
from polybus.core.transport import Delivery, Envelope

if TYPE_CHECKING:
    from polybus.core.bus import AsyncBus

AT_ONCE = 0.25
"""Seconds a pass waits for one more dead letter than it counted."""
MORE = 1000
"""Dead letters a pass may take beyond its count."""
BATCH = 100
"""Dead letters replayed with one confirmation."""


class DeadLetter(PeekedMessage):
    """A message in a dead-letter queue, with why it died (its ``x-polybus-dead-*`` headers)."""

    __slots__ = ()

    @property
    def reason(self) -> str | None:
        """``rejected``, ``expired``, ``retries-exhausted``, ``not-retried`` or
        ``undecodable``."""
        return _text(self.headers.get(DEAD_REASON))

    @property
    def died_on(self) -> str | None:
        """The queue it died on (its broker name)."""
        return _text(self.headers.get(DEAD_QUEUE))

    @property
    def error(self) -> str | None:
        """The type name of the handler's exception, if a handler's failure killed it."""
        return _text(self.headers.get(DEAD_ERROR))

    @property
    def error_message(self) -> str | None:
        return _text(self.headers.get(DEAD_MESSAGE))

    @property
    def died_at(self) -> float | None:
        """When it first died, in seconds since the epoch."""
        at = self.headers.get(DEAD_AT)
        return at / 1000 if isinstance(at, int | float) and not isinstance(at, bool) else None

    @property
    def retries(self) -> int:
        """How many times a worker retried it before it died."""
        return retries_of(self.headers)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def revived(envelope: Envelope) -> Envelope:
    """The message as it is sent again to its queue: without the headers of its death (its
    retry count reset) and without a broker's record of deaths, which would mark it dead
    again; its body, id and other headers as they were."""
    headers = {name: value for name, value in envelope.headers.items() if name not in _FORGOTTEN}
    return replace(envelope, headers=headers, expiration=None, delay=None)


_FORGOTTEN = DEATH | DEATH_HISTORY | {RETRIES}

Selector = Callable[[DeadLetter], bool]


class DeadLetters:
    """The dead letters of one queue: ``q.dead_letters``.

    Only the dead letters that died on this queue (or say nowhere where they died) are its
    own: a dead-letter queue shared by several queues is operated queue by queue.
    """

    def __init__(
        self,
        bus: AsyncBus,
        queue: str,
        dead_letter_queue: str | None,
        declare: Callable[[], Awaitable[None]],
    ) -> None:
        self._bus = bus
        self._queue = queue
        self._dlq = dead_letter_queue
        self._declare = declare

    @property
    def queue(self) -> str | None:
        """The dead-letter queue (its broker name), if the queue has one."""
        return self._dlq

    async def _where(self) -> str:
        """The dead-letter queue, declared (or checked, with ``declare=False``)."""
        if self._dlq is None:
            raise InvalidArgument(
                f"queue {self._queue!r} has no dead-letter queue: declare it with one"
                " (dead_letter=True, the default, or dead_letter='name'); with"
                " declare=False name the one it has"
            )
        await self._declare()
        return self._dlq

    async def count(self) -> int:
        """Dead letters waiting (of every queue, if the dead-letter queue is shared)."""
        return await self._bus._broker.queue_size(await self._where())

    async def peek(self, limit: int = 10) -> list[DeadLetter]:
        """The first ``limit`` dead letters, oldest first, left where they are.

        :raises CapabilityMissing: the broker cannot read a queue without consuming it
            (replay and discard still work).
        """
        limit = check_int(limit, "limit", 1, MAX_PREFETCH)
        deliveries = await self._bus._broker.peek(await self._where(), limit)
        letters = (DeadLetter(delivery) for delivery in deliveries)
        return [letter for letter in letters if self._owns(letter)]

    async def replay(
        self, *, ids: Collection[str] | None = None, where: Selector | None = None
    ) -> int:
        """Send dead letters back to this queue, their retry count reset — all of them, or
        those with a message id in ``ids`` and for which ``where(letter)`` is true — and return
        how many. Each leaves the dead-letter queue only once its copy is confirmed."""
        broker = self._bus._broker

        async def send_back(deliveries: list[Delivery]) -> None:
            revivals = [(self._queue, revived(delivery.envelope)) for delivery in deliveries]
            await broker.publish_many("", revivals)
            for delivery in deliveries:
                await broker.ack(delivery)

        return await self._pass(_selector(ids, where), send_back)

    async def discard(
        self, *, ids: Collection[str] | None = None, where: Selector | None = None
    ) -> int:
        """Drop dead letters — all of them, or those chosen as ``replay`` chooses — and return
        how many."""
        broker = self._bus._broker

        async def drop(deliveries: list[Delivery]) -> None:
            for delivery in deliveries:
                await broker.ack(delivery)

        return await self._pass(_selector(ids, where), drop)

    async def _pass(
        self, chosen: Selector, act: Callable[[list[Delivery]], Awaitable[None]]
    ) -> int:
        """Consume the dead letters there are now, once each: ``act`` on those ``chosen``, in
        batches (one confirmation for many), the others held and returned at the end (so none
        comes twice). The count is where to stop, but a broker's count may lag behind what was
        just returned to the queue: the pass reads on while more come at once. It ends early
        when as many are held as one consumer may hold (``MAX_PREFETCH``): run it again."""
        broker = self._bus._broker
        dlq = await self._where()
        total = await broker.queue_size(dlq)
        arrived: asyncio.Queue[Delivery] = asyncio.Queue()
        window = min(total + MORE, MAX_PREFETCH)
        held: list[Delivery] = []
        batch: list[Delivery] = []  # chosen, not yet acted on: returned if anything fails
        done = seen = 0
        tag = await broker.consume(dlq, arrived.put_nowait, prefetch=window, auto_ack=False)
        try:
            while len(held) < window:
                if batch and (len(batch) >= BATCH or arrived.empty()):
                    await act(batch)
                    done += len(batch)
                    batch = []
                try:
                    # what was counted comes within the bound of any call (or another consumer
                    # took it, or it expired); one more, at once or not at all
                    wait = broker.deadlines.timeout if seen < total else AT_ONCE
                    delivery = await asyncio.wait_for(arrived.get(), wait)
                except asyncio.TimeoutError:
                    break
                seen += 1
                held.append(delivery)  # until chosen: returned if choosing fails
                letter = DeadLetter(delivery)
                if self._owns(letter) and chosen(letter):
                    batch.append(held.pop())
            if batch:
                await act(batch)
                done += len(batch)
                batch = []
        finally:
            await broker.cancel(tag)
            held += batch
            while not arrived.empty():
                held.append(arrived.get_nowait())
            for delivery in reversed(held):  # a broker that returns each to the front
                await broker.nack(delivery, requeue=True)  # keeps them in their order
        return done

    def _owns(self, letter: DeadLetter) -> bool:
        return letter.died_on in (None, self._queue)


def _selector(ids: Collection[str] | None, where: Selector | None) -> Selector:
    if isinstance(ids, str):
        raise InvalidArgument("ids must be a collection of message ids, not one str")
    if where is not None and not callable(where):
        raise InvalidArgument(f"where must be a function of a dead letter, not {where!r}")
    wanted = None if ids is None else frozenset(ids)

    def chosen(letter: DeadLetter) -> bool:
        if wanted is not None and letter.message_id not in wanted:
            return False
        return where is None or bool(where(letter))

    return chosen
