"""The Lua scripts (``lua/*.lua``, each with a header naming its KEYS and ARGV), and calling them.

Every multi-key change is one script, so Redis applies it atomically. Each script is sent with
``lua/prelude.lua`` in front of it (the helpers they share); a script is called by its SHA, and
loaded again when the server does not know it (after a restart, or on a new server).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from importlib.resources import files
from typing import Any

from redis import exceptions as redis_errors

from polybus.transports.redis._wire import Link, command

NAMES = (
    "heartbeat",
    "release",
    "declare_queue",
    "delete_queue",
    "declare_exchange",
    "delete_exchange",
    "exchange_exists",
    "bind",
    "publish",
    "consume",
    "fetch",
    "settle",
    "retire",
    "ready",
    "peek",
    "queues",
    "delay",
    "due",
)


def _source(name: str) -> str:
    return files("polybus.transports.redis").joinpath(f"lua/{name}.lua").read_text()


class Scripts:
    """The scripts, with the key prefix every one of them takes first."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        prelude = _source("prelude")
        self.bodies = {name: f"{prelude}\n{_source(name)}" for name in NAMES}
        self.shas = {
            name: hashlib.sha1(body.encode()).hexdigest() for name, body in self.bodies.items()
        }

    def command(self, name: str, *args: bytes | str | int) -> bytes:
        """``EVALSHA`` of a script as one packed command, for a pipeline."""
        return command("EVALSHA", self.shas[name], 0, self.prefix, *args)

    def load_commands(self) -> Iterable[bytes]:
        """``SCRIPT LOAD`` of every script."""
        return [command("SCRIPT", "LOAD", body) for body in self.bodies.values()]

    async def call(self, link: Link, name: str, *args: bytes | str | int) -> Any:
        """Run a script on the link and return its reply (an error reply as a
        ``ResponseError`` instance, not raised); load the scripts first if Redis lost them."""
        (reply,) = await link.call(self.command(name, *args))
        if isinstance(reply, redis_errors.NoScriptError):
            await link.call(*self.load_commands())
            (reply,) = await link.call(self.command(name, *args))
        return reply
