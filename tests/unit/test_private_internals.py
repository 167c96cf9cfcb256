"""Every access to a library's private parts is one that docs/private-internals.md names."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.private_access import Access, find_accesses

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "private-internals.md"
PACKAGES = ("dispatcher", "workers", "producer")


@dataclass(frozen=True)
class Row:
    """One row of the table: the names it touches, in which files, caught by which tests."""

    names: frozenset[str]
    paths: tuple[str, ...]
    tests: tuple[str, ...]
    text: str


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def table_rows(text: str) -> list[Row]:
    """The rows of the "Every access" table."""
    section = text.split("## Every access", 1)[1]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] in {"library", "---"}:
            continue
        names = frozenset(token.split(".")[-1] for token in _ticked(cells[1]))
        rows.append(Row(names, tuple(_ticked(cells[2])), tuple(_ticked(cells[5])), line))
    return rows


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    found = table_rows(TABLE.read_text())
    assert found, "no rows read from the table"
    return found


@pytest.fixture(scope="module")
def accesses() -> list[Access]:
    return find_accesses(ROOT, PACKAGES)


def _named(rows: list[Row]) -> set[tuple[str, str]]:
    return {(path, name) for row in rows for path in row.paths for name in row.names}


def test_every_access_to_a_librarys_private_parts_is_in_the_table(
    rows: list[Row], accesses: list[Access]
) -> None:
    named = _named(rows)
    unlisted = [a for a in accesses if (a.path, a.name) not in named]
    assert not unlisted, "add a row to docs/private-internals.md for: " + ", ".join(
        f"{a.path}:{a.line} {a.name}" for a in unlisted
    )


def test_every_private_name_in_the_table_is_still_used_where_it_says(
    rows: list[Row], accesses: list[Access]
) -> None:
    found = {(a.path, a.name) for a in accesses}
    stale = [
        (path, name)
        for path, name in _named(rows)
        if name.startswith("_") and (path, name) not in found
    ]
    assert not stale, f"rows name accesses the code no longer makes: {stale}"


def test_every_name_in_the_table_appears_in_the_file_it_names(rows: list[Row]) -> None:
    for row in rows:
        assert row.paths, f"a row names no file: {row.text}"
        source = "".join((ROOT / path).read_text() for path in row.paths)
        for name in row.names:
            if re.fullmatch(r"\w+", name):
                assert re.search(rf"\b{name}\b", source), f"{name} not in {row.paths}"


def test_every_row_names_tests_that_exist(rows: list[Row]) -> None:
    for row in rows:
        assert row.tests, f"a row names no test: {row.text}"
        for test in row.tests:
            path, _, name = test.partition("::")
            source = (ROOT / path).read_text()
            assert re.search(rf"def {re.escape(name)}\(", source), f"no test {test}"


def test_the_scan_finds_a_new_private_access(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "sneaky.py").write_text(
        "import kombu\n"
        "from celery.worker.consumer import Consumer\n"
        "from httpx_aiohttp.transport import map_aiohttp_exceptions\n"
        "\n"
        "class Mine(Consumer):\n"
        "    def _flush_events(self):\n"
        "        return None\n"
        "\n"
        "    def _our_own_helper(self):\n"
        "        return None\n"
        "\n"
        "def peek(channel):\n"
        "    getattr(channel, '_do_restore_message')\n"
        "    return channel._remove_from_indices('tag')\n"
    )
    found = {(a.name, a.line) for a in find_accesses(tmp_path, ("pkg",))}
    assert found == {
        ("map_aiohttp_exceptions", 3),
        ("_flush_events", 6),
        ("_do_restore_message", 13),
        ("_remove_from_indices", 14),
    }


def test_the_scan_leaves_our_own_private_names_alone(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "own.py").write_text(
        "class Store:\n"
        "    def __init__(self):\n"
        "        self._client = None\n"
        "\n"
        "    def _create_client(self):\n"
        "        return self._client\n"
        "\n"
        "def use(store):\n"
        "    return store._create_client()\n"
    )
    assert find_accesses(tmp_path, ("pkg",)) == []
