"""The docs' examples that need a running worker, run against a real one.

The stack is configured as `llmdispatch demo --keep` configures its own, which
is what the README tells a reader to run them against: one stand-in vendor
named `mock`, serving the models `demo-*`, replying "echo: " and the last user
message, and the default vendor.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.stack import running_stack
from tests.unit.test_docs_examples import WITH_WORKER, Example

pytestmark = pytest.mark.integration

FRONT_KEY = "docs-front-key-0123456789abcdef"
DEMO_LIKE_CONFIG = {
    "vendors": {"mock": {"type": "mock", "models": ["demo-*"]}},
    "default_vendor": "mock",
}


@pytest.mark.parametrize("example", WITH_WORKER, ids=[e.name for e in WITH_WORKER])
def test_doc_example_runs_against_a_worker(
    example: Example, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert example.prints, "say what it prints: <!-- doctest: worker; prints: ... -->"
    with running_stack(tmp_path) as stack:
        stack.configure(DEMO_LIKE_CONFIG, LLMDISPATCH_SERVER_API_KEYS=f"{FRONT_KEY}:docs")
        stack.start_worker(["llm.mock", "llm.mock.batch"])
        if example.needs_front:
            # As the page tells a reader: the SDK finds the front through its own variables.
            front = stack.start_front()
            stack.env.update(OPENAI_BASE_URL=f"{front.url}/v1", OPENAI_API_KEY=FRONT_KEY)
        with stack.environment():
            exec(compile(example.code, example.name, "exec"), {})  # noqa: S102 - our own documentation
    out = capsys.readouterr().out
    for text in example.prints:
        assert text in out
