"""The README's examples that need a running worker, run against a real one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.stack import running_stack
from tests.unit.test_readme import README, WITH_WORKER

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("code", WITH_WORKER, ids=[f"block{i}" for i in range(len(WITH_WORKER))])
def test_readme_example_runs_against_a_worker(
    code: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each block's first line ends with what it prints: "... prints: a | b".
    expected = code.split("\n", 1)[0].partition("prints:")[2].split(" | ")
    assert [text for text in expected if text.strip()], "say what the example prints"
    with running_stack(tmp_path) as stack:
        stack.configure({"vendors": {"mock": {"type": "mock"}}})
        stack.start_worker(["llm.mock", "llm.mock.batch"])
        with stack.environment():
            exec(compile(code, str(README), "exec"), {})  # noqa: S102 - our own documentation
    out = capsys.readouterr().out
    for text in expected:
        assert text.strip() in out
