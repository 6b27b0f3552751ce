"""The pytest plugin minds its own business: it runs only the tests that use its fixtures,
and every name it adds starts with ``polybus_``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

STRANGERS_TESTS = textwrap.dedent(
    """
    import asyncio

    import pytest


    @pytest.fixture
    def target():  # a stranger's own fixtures, with generic names
        return "theirs"


    @pytest.fixture
    def connect():
        return "theirs too"


    @pytest.fixture
    def bus():
        return "their bus"


    def test_their_fixtures_are_theirs(target, connect, bus):
        assert (target, connect, bus) == ("theirs", "theirs too", "their bus")


    async def test_their_coroutine_is_not_run_by_polybus():
        raise AssertionError("polybus ran a stranger's async test")


    def test_a_blocking_bus_for_their_unit_tests(polybus_bus):
        polybus_bus.work_queue("mails").send({"to": "ada"})
        with polybus_bus.work_queue("mails").consume() as sub:
            assert sub.receive(timeout=5).body == {"to": "ada"}


    async def test_an_asyncio_bus_for_their_unit_tests(polybus_async_bus):
        q = polybus_async_bus.work_queue("mails")
        await q.send({"to": "ada"})
        async with q.consume() as sub:
            msg = await sub.receive(timeout=5)
            await msg.ack()
        assert msg.body == {"to": "ada"}
        assert asyncio.get_running_loop() is not None
    """
)


def test_the_plugin_leaves_a_strangers_tests_alone(tmp_path: Path) -> None:
    # Given a project of someone else's with fixtures named like polybus's old ones
    (tmp_path / "test_theirs.py").write_text(STRANGERS_TESTS)
    # When pytest runs it with polybus installed (and no async plugin of theirs)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    # Then their fixtures are theirs, their coroutine test is not run by polybus (pytest
    # skips it for want of an async plugin), and polybus's buses work under their names
    out = done.stdout
    assert "3 passed" in out, out
    assert "polybus ran a stranger's async test" not in out
    assert "1 skipped" in out or "async def functions are not natively supported" in out, out
