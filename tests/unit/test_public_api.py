"""The public surface changes only on purpose, and the package boundaries hold."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dispatcher", "workers", "producer")


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_matches_what_init_exposes(name: str) -> None:
    package = importlib.import_module(name)
    exported = list(package.__all__)
    assert exported == sorted(exported)
    public = {
        attr
        for attr, value in vars(package).items()
        if not attr.startswith("_") and not isinstance(value, ModuleType)
    }
    assert public | ({"__version__"} & set(exported)) == set(exported)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("dispatcher", {"celery", "kombu", "workers", "producer"}),
        ("workers", {"producer"}),
        ("producer", {"workers"}),
    ],
)
def test_packages_only_meet_in_redis(package: str, forbidden: set[str]) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        assert not (_imports(path) & forbidden), f"{path.relative_to(ROOT)} imports {forbidden}"


def test_importing_dispatcher_does_not_load_celery() -> None:
    code = (
        "import sys, dispatcher; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'celery', 'kombu'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"
