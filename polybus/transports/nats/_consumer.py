"""The two ways a NATS transport consumes.

``PullConsumer`` reads a queue's stream through its durable consumer with pull requests of its
own: one request at a time, asking for no more than the room its prefetch leaves, each ended by
its last message or by a status (a timeout after ``EXPIRES``). Its messages are acked or kept
alive (``_liveness``) through their reply subjects, and returned to the queue as a copy stored
again (see ``PullConsumer._return``). When it stops, its inbox goes: the server drops a pull
request nobody listens to.

``TransientQueue`` is an exclusive queue: a plain subscription of its owner to the queue's
subject, its messages kept here until consumed. It answers a confirmed publish as a stream
would (a ``PubAck``), so a publisher cannot tell the two apart and a queue whose owner is gone
answers nobody (the publish is then unroutable, and the queue's records can be reaped).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from polybus.core.deadletters import EXPIRED, REJECTED
from polybus.core.tasks import cancelled, finished
from polybus.core.transport import DeliverCallback, Delivery, Envelope, QueueStats
from polybus.transports.nats._codec import decode, history, returned
from polybus.transports.nats._errors import ERRORS, FAILURES

log = logging.getLogger("polybus.nats")

EXPIRES = 5.0
"""Seconds a pull request waits for messages before the server ends it."""
BACKOFF = 0.5
"""Seconds between pull requests while the queue's stream cannot be read."""
DRAIN_WAIT = 2.0
"""Seconds a stopping consumer waits for what the server sent before it stopped (to return
it) before it lets the rest go, to come back after the ack wait."""
ACK, NAK = b"+ACK", b"-NAK"
PUB_ACK = b'{"stream":"","seq":0}'
PROBE = "Polybus-Probe"
"""A header asking an exclusive queue's owner whether it is alive (it answers, nothing more)."""

DeadLetter = Callable[[Envelope, str, str, str], Awaitable[None]]
"""Moves a message (envelope, exchange, routing key, reason) to its queue's dead-letter queue."""
Requeue = Callable[[str, dict[str, str], bytes], Awaitable[bool]]
"""Stores a message (subject, headers, payload) in its queue's stream again and waits for the
stream to confirm it; False when the queue has no stream any more."""


def acked_metadata(reply: str) -> tuple[int, int]:
    """(times delivered, stored at in ns since the epoch) from a JetStream reply subject:
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``,
    or its longer form with a domain and an account hash after ``$JS.ACK``."""
    tokens = reply.split(".")
    first = 4 if len(tokens) == 9 else 6
    return int(tokens[first]), int(tokens[first + 3])


def expired(deadline_ms: int | None, stored_ns: int, message_ttl: float | None) -> bool:
    """Whether a message is past its own deadline, or its queue's ``message_ttl`` (seconds)
    counted from when its queue first stored it (ns since the epoch)."""
    now_ms = time.time() * 1000
    if deadline_ms is not None and deadline_ms <= now_ms:
        return True
    return message_ttl is not None and stored_ns / 1e6 + message_ttl * 1000 <= now_ms


class PullConsumer:
    """Delivers one queue's streams to one callback, holding at most ``prefetch`` unacked.

    A queue with priorities has a stream per level (``levels``, highest first): each round asks
    each level in turn for what it has now (``no_wait``), highest first, and when none had
    anything waits for the doorbell — a plain subscription to the queue's subjects that hears
    every publish — or ``EXPIRES``.
    """

    def __init__(
        self,
        nc: Client,
        tag: str,
        queue: str,
        levels: list[str],
        doorbell: str | None,
        deliver: DeliverCallback,
        prefetch: int,
        auto_ack: bool,
        message_ttl: float | None,
        dead_letter: DeadLetter,
        requeue: Requeue,
    ) -> None:
        self.nc = nc
        self.tag = tag
        self.queue = queue
        self.levels = levels  # the pull subjects of the queue's streams, highest level first
        self.doorbell = doorbell
        self.deliver = deliver
        self.prefetch = prefetch
        self.refill = max(1, prefetch // 2)  # ask again once this much room is free
        self.auto_ack = auto_ack
        self.message_ttl = message_ttl
        self.dead_letter = dead_letter
        self.requeue = requeue
        self.held: dict[str, Msg] = {}  # the unsettled, by reply subject
        self.ack_wait = math.inf  # seconds the durable consumer waits for an ack (owner sets)
        self.stopped = False
        self._inbox = nc.new_inbox()
        self._subscriptions: list[Any] = []
        self._task: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._over = asyncio.Event()  # the pull request in flight has ended
        self._rang = asyncio.Event()  # something was published to a queue with priorities
        self._asked = 0
        self._got = 0
        self._chores: set[asyncio.Task[None]] = set()
        self.ending: asyncio.Task[None] | None = None  # once stopping
        self._unseen: set[str] = set()  # arrived once stopped: never delivered

    async def start(self) -> None:
        self._subscriptions.append(await self.nc.subscribe(self._inbox, cb=self._on_message))
        if self.doorbell is not None:
            self._subscriptions.append(await self.nc.subscribe(self.doorbell, cb=self._ring))
        self._task = asyncio.ensure_future(self._pull())

    async def resume(self) -> None:
        """After a reconnect: the request in flight was lost with the connection; ask again."""
        self._over.set()
        self._rang.set()

    async def stop(self) -> None:
        """Ask for nothing more; what arrives meanwhile goes back to the queue."""
        await finished(self.stopping())

    def stopping(self) -> asyncio.Task[None]:
        """Stop asking, at once, and return the task that ends the consumer (``ending``):
        started before anything is awaited, so that a stop itself cancelled still ends it."""
        self.stopped = True
        if self.ending is None:
            if self._task is not None:
                self._task.cancel()
            self.ending = asyncio.ensure_future(self._end())
        return self.ending

    async def _end(self) -> None:
        await finished(self._task)  # no request is sent after this
        for subscription in self._subscriptions:
            await self._drain(subscription)

    @staticmethod
    async def _drain(subscription: Any) -> None:
        """End a subscription as nats-py's drain does: the server stops sending, and what it
        sent before comes in (and is returned). A plain unsubscribe would drop it, unacked
        until its ack wait passes and then uncounted as ready until a consumer pulls it."""
        try:
            await asyncio.wait_for(subscription.drain(), DRAIN_WAIT)
        except ERRORS:  # the connection is lost, or slow: what is on its way comes back later
            with contextlib.suppress(*ERRORS):
                await subscription.unsubscribe()

    async def halt(self) -> None:
        """Stop asking, at once and without a word to the server (a crash, or a close that ran
        out of time): the pulling task and the chores end."""
        self.stopped = True
        for task in (self._task, self.ending, *self._chores):
            if task is not None:
                task.cancel()
                await cancelled(task)

    def _free(self) -> int:
        """How many messages to ask for now (0: wait for acks)."""
        room = self.prefetch if self.auto_ack else self.prefetch - len(self.held)
        return 0 if room <= 0 or (self.held and room < self.refill) else room

    async def _pull(self) -> None:
        while not self.stopped:
            if not self._free():
                self._room.clear()
                await self._room.wait()
                continue
            if len(self.levels) == 1:
                await self._request(self.levels[0], self._free(), wait=True)
                continue
            self._rang.clear()
            got = 0
            for level in self.levels:
                if self._free():
                    got += await self._request(level, self._free(), wait=False)
            if not got:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._rang.wait(), EXPIRES)

    async def _request(self, subject: str, batch: int, wait: bool) -> int:
        """Ask one stream for up to ``batch`` messages (``wait``: for up to ``EXPIRES`` until
        the first comes) and return how many came."""
        self._asked, self._got = batch, 0
        self._over.clear()
        ask: dict[str, Any] = {"batch": batch}
        if wait:
            ask["expires"] = int(EXPIRES * 1e9)
        else:
            ask["no_wait"] = True
        try:
            await self.nc.publish(subject, json.dumps(ask).encode(), reply=self._inbox)
        except ERRORS as exc:
            log.debug("pull request on %s failed: %r", self.queue, exc)
            await asyncio.sleep(BACKOFF)
            return 0
        with contextlib.suppress(asyncio.TimeoutError):  # a request lost with the connection
            await asyncio.wait_for(self._over.wait(), EXPIRES + 1.0)
        return self._got

    async def _ring(self, msg: Msg) -> None:
        self._rang.set()

    async def _on_message(self, msg: Msg) -> None:
        if not msg.data and msg.headers and "Status" in msg.headers:
            await self._on_status(msg.headers["Status"], msg.headers.get("Description", ""))
            return
        self._got += 1
        if self._got >= self._asked:
            self._over.set()
        if self.stopped:  # returned at once, in order
            self.held[msg.reply] = msg
            self._unseen.add(msg.reply)
            await self._return(msg)
            return
        envelope, exchange, key, deadline_ms, defect = decode(msg.headers, msg.data)
        delivered, stored_ns = history(msg.headers, *acked_metadata(msg.reply))
        if expired(deadline_ms, stored_ns, self.message_ttl):
            self._chore(self._expire(msg.reply, envelope, exchange, key))
            return
        if self.auto_ack:
            await self._settle(msg.reply, ACK)
        else:
            self.held[msg.reply] = msg
        tag = (self, msg.reply)
        self.deliver(
            Delivery(envelope, exchange, key, delivered > 1, delivered, tag, self.tag, defect)
        )

    async def _on_status(self, status: str, description: str) -> None:
        if status == "100":  # an idle heartbeat
            return
        if status not in ("404", "408"):  # 409: the consumer is gone; 503: the stream is
            log.debug("pull request on %s ended: %s %s", self.queue, status, description)
            await asyncio.sleep(BACKOFF)
        self._over.set()

    async def _expire(self, reply: str, envelope: Envelope, exchange: str, key: str) -> None:
        await self.dead_letter(envelope, exchange, key, EXPIRED)
        await self._settle(reply, ACK)

    def _chore(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._chores.add(task)
        task.add_done_callback(self._chore_done)

    def _chore_done(self, task: asyncio.Task[None]) -> None:
        self._chores.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not dead-letter an expired message of %s: %r", self.queue, task)

    async def _settle(self, reply: str, outcome: bytes) -> None:
        await self.nc.publish(reply, outcome)

    def _released(self, reply: str) -> None:
        self.held.pop(reply, None)
        if self.prefetch - len(self.held) >= self.refill:
            self._room.set()

    async def ack(self, reply: str) -> None:
        self._released(reply)
        await self._settle(reply, ACK)

    async def nack(self, reply: str, delivery: Delivery, requeue: bool) -> None:
        if requeue:
            msg = self.held.get(reply)
            if msg is not None:  # else acked already (auto_ack), or being returned
                await self._return(msg)
            return
        # held (and renewed) until its copy is in the dead-letter queue
        await self.dead_letter(delivery.envelope, delivery.exchange, delivery.routing_key, REJECTED)
        self._released(reply)
        await self._settle(reply, ACK)

    async def give_back(self) -> None:
        """Return every held message to the queue (a closing consumer's), in the order they
        came."""
        for msg in list(self.held.values()):
            await self._return(msg)

    async def _return(self, msg: Msg) -> None:
        """Put a delivered message back in its queue as a copy stored at the tail of its
        stream (with its history: ``_codec.returned``), then ack the original.

        JetStream's ``-NAK`` would leave it counted as delivered and unacked until redelivered:
        no count the server gives tells it from a message a consumer holds, so ``queue_size``
        would miss it. The copy is counted as ready at once, by every connection. It is
        confirmed before the original is acked: a crash in between means a redelivery, never a
        loss. Should the copy fail, the ``-NAK`` returns the message all the same. One that
        arrived after the consumer stopped was never delivered: not counted as delivered."""
        if msg.reply not in self.held:
            return  # returned already: once, however many ask (a close, a nack, ``stop``)
        self._released(msg.reply)
        delivered, stored_ns = acked_metadata(msg.reply)
        if msg.reply in self._unseen:
            self._unseen.discard(msg.reply)
            delivered -= 1
        headers = returned(msg.headers, delivered, stored_ns)
        try:
            stored = await self.requeue(msg.subject, headers, msg.data)
        except FAILURES as exc:
            log.warning("could not store a returned message of %s again (%r)", self.queue, exc)
            stored = False
        await self._settle(msg.reply, ACK if stored else NAK)


class _Stored:
    __slots__ = ("deadline_ms", "defect", "delivered", "envelope", "exchange", "key", "number")

    def __init__(
        self,
        number: int,
        message: tuple[Envelope, str, str, int | None, str | None],
    ) -> None:
        self.number = number
        self.envelope, self.exchange, self.key, self.deadline_ms, self.defect = message
        self.delivered = 0


class TransientQueue:
    """An exclusive queue: its owner's subscription and the messages it has not delivered."""

    def __init__(self, nc: Client, name: str, subject: str, dead_letter: DeadLetter) -> None:
        self.nc = nc
        self.name = name
        self.queue = name
        self.subject = subject
        self.dead_letter = dead_letter
        self.ready: deque[_Stored] = deque()
        self.held: dict[int, _Stored] = {}
        self.consumer: tuple[str, DeliverCallback, int, bool] | None = None  # tag, ...
        self._numbers = itertools.count()
        self._subscription: Any = None
        self._expired: deque[_Stored] = deque()
        self._chores: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        self._subscription = await self.nc.subscribe(self.subject, cb=self._on_message)

    async def close(self) -> None:
        self.consumer = None
        for chore in self._chores:
            chore.cancel()
            await cancelled(chore)
        if self._subscription is not None:
            with contextlib.suppress(*ERRORS):
                await self._subscription.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        if msg.reply:  # a confirmed publish (or a probe): confirm it as a stream would
            await self.nc.publish(msg.reply, PUB_ACK)
        if msg.headers and PROBE in msg.headers:
            return
        self.ready.append(_Stored(next(self._numbers), decode(msg.headers, msg.data)))
        self.dispatch()

    def dispatch(self) -> None:
        while self.consumer is not None and self.ready:
            tag, deliver, prefetch, auto_ack = self.consumer
            if not auto_ack and len(self.held) >= prefetch:
                return
            stored = self.ready.popleft()
            if stored.deadline_ms is not None and stored.deadline_ms <= time.time() * 1000:
                self._expired.append(stored)  # never delivered: dead-lettered, in order
                if len(self._expired) == 1:
                    chore = asyncio.ensure_future(self._dead_letter_expired())
                    self._chores.add(chore)
                    chore.add_done_callback(self._chores.discard)
                continue
            stored.delivered += 1
            if not auto_ack:
                self.held[stored.number] = stored
            deliver(
                Delivery(
                    stored.envelope,
                    stored.exchange,
                    stored.key,
                    stored.delivered > 1,
                    stored.delivered,
                    (self, stored.number),
                    tag,
                    stored.defect,
                )
            )

    async def _dead_letter_expired(self) -> None:
        try:
            while self._expired:
                stored = self._expired[0]
                await self.dead_letter(stored.envelope, stored.exchange, stored.key, EXPIRED)
                self._expired.popleft()
        except FAILURES as exc:
            log.warning("could not dead-letter expired messages of %s: %r", self.name, exc)
        finally:
            self._expired.clear()

    def attach(self, tag: str, deliver: DeliverCallback, prefetch: int, auto_ack: bool) -> None:
        self.consumer = (tag, deliver, prefetch, auto_ack)
        self.dispatch()

    def detach(self) -> None:
        """Stop delivering; held messages stay settleable and go back to the queue."""
        self.consumer = None

    def stats(self) -> QueueStats:
        """Everything is known here: the queue lives in its owner, with its one consumer."""
        return QueueStats(
            self.name, len(self.ready), len(self.held), int(self.consumer is not None)
        )

    def peek(self, limit: int) -> list[Delivery]:
        """The next ``limit`` messages ``dispatch`` would deliver (not the expired it skips)."""
        now_ms = time.time() * 1000
        live = (s for s in self.ready if s.deadline_ms is None or s.deadline_ms > now_ms)
        return [
            Delivery(
                s.envelope, s.exchange, s.key, s.delivered > 0, s.delivered, None, defect=s.defect
            )
            for s in itertools.islice(live, limit)
        ]

    def purge(self) -> int:
        count = len(self.ready)
        self.ready.clear()
        return count

    async def ack(self, number: int) -> None:
        self.held.pop(number, None)
        self.dispatch()

    async def nack(self, number: int, delivery: Delivery, requeue: bool) -> None:
        stored = self.held.pop(number, None)
        if stored is not None and requeue:
            self.ready.appendleft(stored)
        elif stored is not None:
            await self.dead_letter(stored.envelope, stored.exchange, stored.key, REJECTED)
        self.dispatch()
