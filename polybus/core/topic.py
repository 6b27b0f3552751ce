"""AMQP topic matching, exactly as RabbitMQ's topic exchange does it.

A key is a list of words split on ``.``; the empty key is zero words (RabbitMQ's rule: ``*`` does
not match ``""``, ``#`` does). In a pattern ``*`` is exactly one word and ``#`` zero or more, so
``a.#`` matches ``a`` and ``#.a.#`` matches ``a``. Checked against a live RabbitMQ by the
conformance suite's property test.
"""

from __future__ import annotations

from functools import lru_cache


def split_words(key: str) -> tuple[str, ...]:
    return tuple(key.split(".")) if key else ()


@lru_cache(maxsize=65536)
def topic_matches(pattern: str, key: str) -> bool:
    """Whether a routing key matches a binding pattern."""
    return _match(split_words(pattern), split_words(key))


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    # reachable[j]: the pattern consumed so far can match exactly words[:j]
    reachable = [True] + [False] * len(words)
    for part in pattern:
        if part == "#":
            for j in range(1, len(words) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        else:
            for j in range(len(words), 0, -1):
                reachable[j] = reachable[j - 1] and (part == "*" or part == words[j - 1])
            reachable[0] = False
    return reachable[len(words)]
