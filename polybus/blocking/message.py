"""The blocking API's received message: ``msg.ack()`` from any thread, without waiting.

Settling goes to the subscription that received it, which hands it to the bus's loop in
batches (as AMQP's acks: an ack that never arrives is a redelivery, never a loss).
"""

from __future__ import annotations

from typing import Protocol

from polybus.core.message import BaseMessage
from polybus.core.transport import Delivery


class ThreadSafeSettler(Protocol):
    """Where a blocking message's ack/nack go: callable from any thread."""

    def _settle_soon(self, delivery: Delivery, outcome: str) -> None: ...


class Message(BaseMessage):
    """A message of the blocking API; settling does not wait for the broker (as AMQP acks)."""

    __slots__ = ()

    def ack(self) -> None:
        """Remove it from its queue. Settling twice is a no-op."""
        settler = self._claim()
        if settler is not None:
            settler._settle_soon(self._delivery, "ack")

    def nack(self, requeue: bool = True) -> None:
        """Put it back (``requeue``) or drop it / move it to the dead-letter queue."""
        settler = self._claim()
        if settler is not None:
            settler._settle_soon(self._delivery, "requeue" if requeue else "reject")

    def reject(self) -> None:
        """Drop it, or move it to the queue's dead-letter queue."""
        self.nack(requeue=False)
