"""The README's Python examples run as written (those needing a worker: see integration)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
NEEDS_WORKER = "# Runs against a worker"
STANDALONE = [block for block in BLOCKS if not block.startswith(NEEDS_WORKER)]
WITH_WORKER = [block for block in BLOCKS if block.startswith(NEEDS_WORKER)]


def test_the_readme_has_python_examples_of_both_kinds() -> None:
    assert len(STANDALONE) >= 3
    assert len(WITH_WORKER) >= 1


@pytest.mark.parametrize("code", STANDALONE, ids=[f"block{i}" for i in range(len(STANDALONE))])
def test_readme_example_runs(code: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(code, str(README), "exec"), {})  # noqa: S102 - our own documentation
    assert capsys.readouterr().out.strip(), "each example prints what it shows"
