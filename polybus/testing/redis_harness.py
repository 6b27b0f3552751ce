"""The Redis harnesses: the shared server for isolated tests, a test-owned server to restart,
and fakeredis.

Shared server (``$POLYBUS_REDIS_URL``, default ``redis://127.0.0.1:6379/0``): every test gets a
namespace, so its keys live under ``polybus:<namespace>:``; cleanup deletes them with SCAN + DEL.
Nothing else on that server is ever touched (no FLUSHDB, no CONFIG SET, no shutdown).

Test-owned server (fault tests): ``redis-server`` on a free port and a temporary directory with
``appendonly yes`` and ``appendfsync always``; a restart is a SIGKILL and a start on the same
directory and port, so what survives is exactly what the append-only file holds.

Tests use ``heartbeat=2``: a crashed consumer's messages come back about two seconds after its
last heartbeat, and a consumer that is merely slow is never reclaimed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from polybus.testing.harness import BrokerHarness, add_namespace, free_port

SHARED_URL = os.environ.get("POLYBUS_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_OPTIONS = "heartbeat=2"
START_TIMEOUT = 10.0


def _with_options(url: str, namespace: str) -> str:
    separator = "&" if "?" in url else "?"
    return add_namespace(f"{url}{separator}{TEST_OPTIONS}", namespace)


def _ping(url: str, timeout: float) -> str | None:
    """None when the Redis server at ``url`` answers PING, else why not."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:
        return f"Redis at {url} does not answer: {exc!r}"
    return None


def delete_keys(url: str, pattern: str) -> int:
    """Delete the keys matching ``pattern`` (SCAN + DEL, never FLUSHDB); return how many."""
    import redis

    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.delete(*batch)
                batch = []
        if batch:
            deleted += client.delete(*batch)
    finally:
        client.close()
    return deleted


class OwnedRedis:
    """A ``redis-server`` this test session starts, kills, restarts and removes."""

    def __init__(self, appendfsync: str = "always") -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="polybus-redis-"))
        self.appendfsync = appendfsync
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with open(self.dir / "server.log", "ab") as out:
            self._process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.dir),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    self.appendfsync,
                    "--save",
                    "",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while (reason := _ping(self.url, 0.5)) is not None:
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"test-owned redis-server did not start: {reason}; see {self.dir}/server.log"
                )
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync — what the append-only file holds is all."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP until the block ends: a server that hangs with its connections open."""
        assert self._process is not None, "start() first"
        self._process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._process.send_signal(signal.SIGCONT)

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisHarness(BrokerHarness):
    name = "redis"

    def __init__(self) -> None:
        self._probed = False
        self._reason: str | None = None
        self._owned: OwnedRedis | None = None

    def unavailable(self) -> str | None:
        if not self._probed:
            self._probed = True
            try:
                import redis  # noqa: F401
            except ImportError:
                self._reason = "redis-py is not installed: pip install 'polybus[redis]'"
            else:
                self._reason = _ping(SHARED_URL, 3.0)
        return self._reason

    def url(self, namespace: str) -> str:
        return _with_options(SHARED_URL, namespace)

    def cleanup(self, namespace: str) -> None:
        delete_keys(SHARED_URL, f"polybus:{namespace}:*")

    def restartable_url(self, namespace: str) -> str | None:
        if shutil.which("redis-server") is None:
            return None
        if self._owned is None:
            owned = OwnedRedis()
            owned.start()
            self._owned = owned
        return _with_options(self._owned.url, namespace)

    def restart(self) -> None:
        assert self._owned is not None, "call restartable_url() first"
        self._owned.restart()

    def shutdown(self) -> None:
        if self._owned is not None:
            owned, self._owned = self._owned, None
            with contextlib.suppress(Exception):
                owned.remove()


class FakeRedisHarness(BrokerHarness):
    """``fakeredis://``: every test gets its own in-process server (the URL's name)."""

    name = "fakeredis"

    def unavailable(self) -> str | None:
        for module in ("redis", "fakeredis", "lupa"):  # lupa runs fakeredis's Lua
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed: pip install 'polybus[fakeredis]'"
        return None

    def url(self, namespace: str) -> str:
        return _with_options(f"fakeredis://{namespace}", namespace)

    def cleanup(self, namespace: str) -> None:
        from polybus.transports.redis._fake import forget_fake_server

        forget_fake_server(namespace)
