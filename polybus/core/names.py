"""Validation of queue and exchange names, routing keys and binding patterns.

Checked before anything reaches a broker, so every transport rejects the same input with the same
``InvalidName`` (RabbitMQ alone would accept names Redis keys choke on, and vice versa).
"""

from __future__ import annotations

import re

from polybus.core.errors import InvalidName

MAX_NAME = 200
MAX_KEY = 255
_NAME = re.compile(r"[A-Za-z0-9_.:\-]+")


def check_name(name: str, what: str = "queue") -> str:
    """A queue or exchange name: 1-200 of letters, digits and ``_ . : -``, not ``amq.…``."""
    if not isinstance(name, str) or not name:
        raise InvalidName(f"{what} name must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise InvalidName(
            f"invalid {what} name {name!r}: use 1-{MAX_NAME} letters, digits and _ . : -"
        )
    if name.startswith("amq."):
        raise InvalidName(f"invalid {what} name {name!r}: the amq. prefix is reserved by AMQP")
    return name


def check_key(key: str) -> str:
    """A routing key to publish with: at most 255 utf-8 bytes, no wildcards."""
    if not isinstance(key, str):
        raise InvalidName(f"routing key must be a string, got {type(key).__name__}")
    if len(key.encode()) > MAX_KEY:
        raise InvalidName(f"routing key {key[:40]!r}… is longer than {MAX_KEY} bytes")
    if "*" in key or "#" in key:
        raise InvalidName(
            f"routing key {key!r} contains a wildcard; * and # belong in binding patterns only"
        )
    return key


def check_pattern(pattern: str) -> str:
    """A topic binding pattern: dot-separated words, where ``*`` and ``#`` stand alone."""
    if not isinstance(pattern, str):
        raise InvalidName(f"binding pattern must be a string, got {type(pattern).__name__}")
    if len(pattern.encode()) > MAX_KEY:
        raise InvalidName(f"binding pattern {pattern[:40]!r}… is longer than {MAX_KEY} bytes")
    for word in pattern.split("."):
        if word not in ("*", "#") and ("*" in word or "#" in word):
            raise InvalidName(
                f"invalid binding pattern {pattern!r}: {word!r} mixes a wildcard with text; "
                "* and # must be whole words, e.g. 'kern.*' or 'a.#'"
            )
    return pattern
