"""Every Python example in README.md and docs/*.md runs as written.

An example's expectations sit in an HTML comment on the line before its code
fence, invisible when the page is rendered:

    <!-- doctest: prints: text | other text -->     runs here; its output holds each text
    <!-- doctest: worker; prints: text -->           runs in the integration suite, against
                                                     a real worker (the demo's configuration)
    <!-- doctest: front; prints: text -->            the same, with `llmdispatch serve` in front,
                                                     OPENAI_BASE_URL and OPENAI_API_KEY set for it

A block with no marker runs here and must print something. The examples that
need a worker run in tests/integration/test_docs_examples_with_worker.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!--\s*doctest:(?P<marker>.*?)-->")
BLOCK = re.compile(
    r"(?:<!--\s*doctest:(?P<marker>.*?)-->\n)?```python\n(?P<code>.*?)```", re.DOTALL
)
# What the old convention put in the code itself: user docs carry no test-harness comments.
HARNESS_WORDS = re.compile(r"README test|Runs against a worker|doctest", re.IGNORECASE)


@dataclass(frozen=True)
class Example:
    """One ```python block of a page, with what its marker asks."""

    page: Path
    line: int
    code: str
    needs_worker: bool
    prints: tuple[str, ...]
    needs_front: bool = False

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def parse_marker(text: str) -> tuple[bool, tuple[str, ...]]:
    """`worker; prints: a | b` -> (True, ("a", "b")); `front` needs a worker too; any other
    word is an error."""
    needs_worker = False
    prints: tuple[str, ...] = ()
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        if part in ("worker", "front"):
            needs_worker = True
        elif part.startswith("prints:"):
            prints = tuple(t.strip() for t in part.removeprefix("prints:").split(" | "))
            if not all(prints):
                raise ValueError(f"an empty text in {part!r}")
        else:
            raise ValueError(f"unknown doctest marker part {part!r} in {text!r}")
    return needs_worker, prints


def examples_in(page: Path) -> list[Example]:
    """The python blocks of `page`, in order."""
    text = page.read_text()
    found = []
    for match in BLOCK.finditer(text):
        needs_worker, prints = parse_marker(match["marker"] or "")
        line = text.count("\n", 0, match.start("code"))
        needs_front = "front" in [p.strip() for p in (match["marker"] or "").split(";")]
        found.append(Example(page, line, match["code"], needs_worker, prints, needs_front))
    return found


EXAMPLES = [example for page in DOCS for example in examples_in(page)]
STANDALONE = [example for example in EXAMPLES if not example.needs_worker]
WITH_WORKER = [example for example in EXAMPLES if example.needs_worker]


def test_the_docs_have_python_examples_of_both_kinds() -> None:
    assert len(STANDALONE) >= 3
    assert len(WITH_WORKER) >= 3
    assert any(e.page.name == "README.md" and e.needs_worker for e in EXAMPLES)


def test_the_readme_streams_a_reply_from_python() -> None:
    readme = [e for e in WITH_WORKER if e.page.name == "README.md"]
    assert any("send_streaming" in e.code or ".stream(" in e.code for e in readme)


def test_every_doctest_marker_sits_on_the_line_before_a_python_block() -> None:
    for page in DOCS:
        text = page.read_text()
        markers = len(MARKER.findall(text))
        attached = sum(1 for m in BLOCK.finditer(text) if m["marker"] is not None)
        assert markers == attached, f"{page.name}: a doctest marker not followed by ```python"


def test_no_example_carries_a_test_harness_comment() -> None:
    for example in EXAMPLES:
        assert not HARNESS_WORDS.search(example.code), example.name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", (False, ())),
        (" worker ", (True, ())),
        (" worker; prints: echo: Hi | 100% ", (True, ("echo: Hi", "100%"))),
        (" prints: True ", (False, ("True",))),
    ],
)
def test_a_marker_says_where_an_example_runs_and_what_it_prints(
    text: str, expected: tuple[bool, tuple[str, ...]]
) -> None:
    assert parse_marker(text) == expected


@pytest.mark.parametrize("text", [" workers ", " prints: a |  | b ", " worker, prints: x "])
def test_a_misspelt_marker_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"doctest marker|empty text"):
        parse_marker(text)


@pytest.mark.parametrize("example", STANDALONE, ids=[e.name for e in STANDALONE])
def test_doc_example_runs(example: Example, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(example.code, example.name, "exec"), {})  # noqa: S102 - our own documentation
    out = capsys.readouterr().out
    assert out.strip(), "each example prints what it shows"
    for text in example.prints:
        assert text in out
