"""The README's promises hold: CI runs its test command, and its standalone snippets run."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _shell_blocks_after(heading: str) -> list[str]:
    section = README.split(heading, 1)[1]
    return re.findall(r"```sh\n(.*?)\n```", section, re.S)


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    # the second of the two commands at the top of the README
    test_command = _shell_blocks_after("## Try it: two commands")[1]
    assert "pytest" in test_command
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def _standalone_snippets() -> list[str]:
    """The python blocks that import polybus themselves (the others continue a session)."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    return [block for block in blocks if re.search(r"^import polybus", block, re.M)]


@pytest.mark.parametrize("snippet", _standalone_snippets(), ids=["blocking", "asyncio"])
def test_standalone_snippet_runs(snippet: str) -> None:
    # a broker of its own, not the process's shared memory:// one
    code = snippet.replace('"memory://"', f'"memory://readme-{os.urandom(4).hex()}"')
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    printed = out.getvalue()
    # every "# value" comment after a print(...) in the snippet is what it printed
    for expected in re.findall(r"print\(.*\)\s+# (\S+)", snippet):
        assert expected in printed
