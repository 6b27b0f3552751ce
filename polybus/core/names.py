"""Validation of queue and exchange names, namespaces, routing keys and binding patterns, and
the names polybus derives from them.

Checked before anything reaches a broker, so every transport rejects the same input with the same
``InvalidName`` (RabbitMQ alone would accept names Redis keys choke on, and vice versa).
"""

from __future__ import annotations

import hashlib
import re

from polybus.core.errors import InvalidName
from polybus.core.limits import MAX_BROKER_NAME, MAX_KEY, MAX_NAME, MAX_NAMESPACE

_NAME = re.compile(r"[A-Za-z0-9_.:\-]+")
_NAME_CHARS = "letters, digits and _ . : -"


def check_name(name: str, what: str = "queue") -> str:
    """A queue or exchange name: 1-200 of letters, digits and ``_ . : -``, not ``amq.…``."""
    if not isinstance(name, str) or not name:
        raise InvalidName(f"{what} name must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise InvalidName(f"invalid {what} name {name[:60]!r}: use 1-{MAX_NAME} {_NAME_CHARS}")
    if name.startswith("amq."):
        raise InvalidName(f"invalid {what} name {name!r}: the amq. prefix is reserved by AMQP")
    return name


def check_namespace(namespace: str) -> str:
    """A URL's ``namespace``: up to 50 of the characters of a name, not ``amq``."""
    if len(namespace) > MAX_NAMESPACE or not _NAME.fullmatch(namespace):
        raise InvalidName(
            f"invalid namespace {namespace[:60]!r}: use 1-{MAX_NAMESPACE} {_NAME_CHARS}"
        )
    if namespace == "amq" or namespace.startswith("amq."):
        raise InvalidName(f"invalid namespace {namespace!r}: the amq. prefix is reserved by AMQP")
    return namespace


def derived_name(base: str, suffix: str, limit: int = MAX_BROKER_NAME) -> str:
    """``<base>.<suffix>``, or, when that is longer than ``limit``, ``base`` cut short and made
    unique again with a digest of the whole: every valid name has its derived names."""
    name = f"{base}.{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{base[: limit - len(suffix) - 12]}-{digest}.{suffix}"


def check_key(key: str) -> str:
    """A routing key to publish with: at most 255 utf-8 bytes, no wildcards."""
    if not isinstance(key, str):
        raise InvalidName(f"routing key must be a string, got {type(key).__name__}")
    if _utf8_size(key, "routing key") > MAX_KEY:
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
    if _utf8_size(pattern, "binding pattern") > MAX_KEY:
        raise InvalidName(f"binding pattern {pattern[:40]!r}… is longer than {MAX_KEY} bytes")
    for word in pattern.split("."):
        if word not in ("*", "#") and ("*" in word or "#" in word):
            raise InvalidName(
                f"invalid binding pattern {pattern!r}: {word!r} mixes a wildcard with text; "
                "* and # must be whole words, e.g. 'kern.*' or 'a.#'"
            )
    return pattern


def _utf8_size(text: str, what: str) -> int:
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        raise InvalidName(f"{what} {text[:40]!r} holds a lone surrogate: not valid text") from None
