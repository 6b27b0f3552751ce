"""Receiving helpers shared by the conformance tests."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from polybus import ReceiveTimeout

QUIET = 0.5  # how long "nothing more arrives" is watched for


async def drain(sub: Any, count: int, timeout: float = 10.0, ack: bool = True) -> list[Any]:
    """Receive ``count`` messages (acking each unless ``ack=False``); their bodies in order."""
    bodies: list[Any] = []
    for _ in range(count):
        msg = await sub.receive(timeout=timeout)
        bodies.append(msg.body)
        if ack:
            await msg.ack()
    return bodies


async def receive_until_quiet(
    sub: Any, *, quiet: float = QUIET, ack: bool = False, work: float = 0.0
) -> list[Any]:
    """Every message that arrives until none has for ``quiet`` seconds; ``work`` seconds are
    spent on each before it is acked."""
    received: list[Any] = []
    while True:
        try:
            msg = await sub.receive(timeout=quiet)
        except ReceiveTimeout:
            return received
        received.append(msg)
        if work:
            await asyncio.sleep(work)
        if ack:
            await msg.ack()


async def assert_nothing_arrives(sub: Any, seconds: float = QUIET) -> None:
    with pytest.raises(ReceiveTimeout):
        await sub.receive(timeout=seconds)


async def eventually(check: Any, timeout: float = 10.0) -> None:
    """Wait until ``check()`` is true (a state others change on their own time), or fail."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"still not true after {timeout}s: {check}")
        await asyncio.sleep(0.02)
