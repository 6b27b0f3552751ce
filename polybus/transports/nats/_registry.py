"""What every connection must agree on — queues, exchanges and their bindings — in a JetStream
key-value bucket, so that a declaration made by one process is seen (and a conflicting one
refused) by every other.

Records are JSON. A queue: its options and the exchanges it is bound to. An exchange: its kind,
durability and bindings (queue -> keys). A record changed by two connections at once is changed
with optimistic concurrency (``update`` on the revision read), tried again on a clash.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

from polybus.core.conflicts import exchange_conflict, queue_conflict
from polybus.core.errors import ConnectionFailed, NotFound
from polybus.transports.nats._names import QUEUE_KEY, Names, name_of

Record = dict[str, Any]
CLASHES = 50  # tries of an optimistic update before giving up


class Registry:
    """The declarations of one prefix, in its topology bucket."""

    def __init__(
        self, kv: Any, names: Names, errors: Any, purge: Callable[[str], Awaitable[Any]]
    ) -> None:
        self._kv = kv
        self._names = names
        self._errors = errors  # nats.js.errors: KeyNotFoundError, KeyWrongLastSequenceError
        self._purge = purge  # drops every revision of a key, its delete marker included

    async def _get(self, key: str) -> tuple[Record, int] | None:
        try:
            entry = await self._kv.get(key)
        except self._errors.KeyNotFoundError:
            return None
        if entry.value is None:  # a delete marker
            return None
        return json.loads(entry.value), entry.revision

    async def _create(self, key: str, record: Record) -> bool:
        """Create the record; False when it exists already."""
        try:
            await self._kv.create(key, json.dumps(record).encode())
        except self._errors.KeyWrongLastSequenceError:
            return False
        return True

    async def _change(self, key: str, change: Callable[[Record], Record]) -> Record | None:
        """Apply ``change`` to the record with optimistic concurrency; the new record, or None
        when there is none. Clashing connections back off a random while before reading again."""
        for clash in range(CLASHES):
            found = await self._get(key)
            if found is None:
                return None
            record, revision = found
            changed = change(record)
            try:
                await self._kv.update(key, json.dumps(changed).encode(), last=revision)
            except self._errors.KeyWrongLastSequenceError:
                await asyncio.sleep(random.uniform(0, 0.002 * (clash + 1)))
                continue  # changed meanwhile by another connection: read it again
            return changed
        raise ConnectionFailed(f"the record {key!r} kept changing under this update; try again")

    async def _remove(self, key: str) -> None:
        """Delete a record by purging its subject: one step (a delete then a purge would wipe
        a record created in between), and nothing left behind (a delete marker per name ever
        used — every transient queue has a name of its own — would fill the bucket)."""
        await self._purge(key)

    # -- queues -----------------------------------------------------------------------------

    async def declare_queue(self, name: str, record: Record) -> Record:
        """Create the queue's record, or check it exists with the same options; the record."""
        key = self._names.queue_key(name)
        while True:
            if await self._create(key, record):
                return record
            found = await self._get(key)
            if found is None:
                continue  # deleted between the two: create it again
            existing = found[0]
            if existing["options"] != record["options"]:
                raise queue_conflict(name, existing["options"], record["options"])
            return existing

    async def queue(self, name: str) -> Record | None:
        found = await self._get(self._names.queue_key(name))
        return None if found is None else found[0]

    async def queues(self) -> dict[str, Record]:
        """Every queue's record, by name: one watch of the bucket's queue keys, read until the
        server says it has sent them all."""
        watcher = await self._kv.watch(f"{QUEUE_KEY}>", ignore_deletes=True)
        records: dict[str, Record] = {}
        try:
            while (entry := await watcher.updates()) is not None:
                if entry.value:
                    records[name_of(entry.key[len(QUEUE_KEY) :])] = json.loads(entry.value)
        finally:
            await watcher.stop()
        return records

    async def delete_queue(self, name: str) -> Record | None:
        """Forget the queue and its bindings; its record, if it had one."""
        record = await self.queue(name)
        if record is None:
            return None
        for exchange in record.get("exchanges", []):
            await self._unbind(exchange, name)
        await self._remove(self._names.queue_key(name))
        return record

    # -- exchanges and bindings -------------------------------------------------------------

    async def declare_exchange(self, name: str, kind: str, durable: bool) -> None:
        key = self._names.exchange_key(name)
        record: Record = {"kind": kind, "durable": durable, "bindings": {}}
        while not await self._create(key, record):
            found = await self._get(key)
            if found is None:
                continue
            existing = found[0]
            described = {"kind": existing["kind"], "durable": existing["durable"]}
            if described != {"kind": kind, "durable": durable}:
                raise exchange_conflict(name, described, {"kind": kind, "durable": durable})
            return

    async def exchange(self, name: str) -> Record | None:
        found = await self._get(self._names.exchange_key(name))
        return None if found is None else found[0]

    async def delete_exchange(self, name: str) -> None:
        record = await self.exchange(name)
        if record is None:
            return
        await self._remove(self._names.exchange_key(name))
        for queue in record["bindings"]:
            await self._forget_exchange(queue, name)

    async def bind(self, queue: str, exchange: str, key: str) -> None:
        """Route the exchange's messages with ``key`` to the queue.

        :raises NotFound: the queue or the exchange does not exist.
        """
        if await self.queue(queue) is None:
            raise NotFound(f"queue {queue!r} does not exist; declare it first")

        def bound(record: Record) -> Record:
            keys = record["bindings"].setdefault(queue, [])
            if key not in keys:
                keys.append(key)
            return record

        if await self._change(self._names.exchange_key(exchange), bound) is None:
            raise NotFound(f"exchange {exchange!r} does not exist; declare it first")

        def remembered(record: Record) -> Record:
            if exchange not in record.setdefault("exchanges", []):
                record["exchanges"].append(exchange)
            return record

        await self._change(self._names.queue_key(queue), remembered)

    async def _unbind(self, exchange: str, queue: str) -> None:
        def unbound(record: Record) -> Record:
            record["bindings"].pop(queue, None)
            return record

        await self._change(self._names.exchange_key(exchange), unbound)

    async def _forget_exchange(self, queue: str, exchange: str) -> None:
        def forgotten(record: Record) -> Record:
            record["exchanges"] = [e for e in record.get("exchanges", []) if e != exchange]
            return record

        await self._change(self._names.queue_key(queue), forgotten)
