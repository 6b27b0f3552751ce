"""``DeclarationConflict`` messages that say which option differs, both values, and the way out.

Every transport finds a conflict its own way (RabbitMQ's PRECONDITION_FAILED names one
argument, memory and Redis compare the options they keep); all of them describe it here, in the
words of polybus's own arguments, so the fix reads the same everywhere: declare it the way it
exists, or use it as it is with ``declare=False``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from polybus.core.errors import DeclarationConflict

QUEUE_OPTIONS = (
    "durable",
    "dead_letter",
    "message_ttl",
    "max_priority",
    "exclusive",
    "auto_delete",
)
"""Queue options as ``QueueOptions`` names them, in the order they are shown."""


def queue_conflict(
    name: str, existing: Mapping[str, Any], asked: Mapping[str, Any], where: str = ""
) -> DeclarationConflict:
    """The conflict of declaring queue ``name`` with ``asked`` where it exists with
    ``existing`` (only the options both name are compared)."""
    return _conflict("queue", name, _differing(existing, asked), where)


def exchange_conflict(
    name: str, existing: Mapping[str, Any], asked: Mapping[str, Any], where: str = ""
) -> DeclarationConflict:
    """The conflict of declaring exchange ``name`` (options ``kind`` and ``durable``)."""
    return _conflict("exchange", name, _differing(existing, asked), where)


def _differing(existing: Mapping[str, Any], asked: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    order = {option: index for index, option in enumerate((*QUEUE_OPTIONS, "kind"))}
    names = sorted(set(existing) & set(asked), key=lambda option: order.get(option, 99))
    return [(n, existing[n], asked[n]) for n in names if existing[n] != asked[n]]


def _conflict(
    what: str, name: str, differing: list[tuple[str, Any, Any]], where: str
) -> DeclarationConflict:
    place = f" on {where}" if where else ""
    if not differing:
        return DeclarationConflict(f"{what} {name!r} exists{place} with other options")
    has = ", ".join(f"{option}={value!r}" for option, value, _ in differing)
    wants = ", ".join(f"{option}={value!r}" for option, _, value in differing)
    return DeclarationConflict(
        f"{what} {name!r} exists{place} with {has}, but this call asks for {wants}: pass"
        f" {has} to use it as it was declared, pass declare=False to use it as it is without"
        f" declaring anything, or delete it first"
    )
