"""The README's editable install type-checks in a user's own project: mypy finds polybus and
its types (setuptools' default editable install for this layout is an import hook that type
checkers cannot see)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

APP = """
import polybus

with polybus.connect("memory://") as bus:
    count: int = bus.work_queue("tasks").size()
    bus.work_queue("tasks").send("x", priority="high")  # a str where an int goes: mypy says so
"""


def test_mypy_finds_polybus_and_its_types_from_a_users_project(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "app.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert "import-not-found" not in done.stdout and "import-untyped" not in done.stdout
    assert 'app.py:6: error: Argument "priority"' in done.stdout, done.stdout
