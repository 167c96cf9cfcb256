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


def test_the_cli_loads_its_tools_only_when_a_command_needs_them() -> None:
    code = (
        "import sys, producer, producer.cli; "
        "print(sorted(m for m in sys.modules if m.startswith('producer.cli.tools.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"


def test_the_client_library_never_imports_the_command_line() -> None:
    def in_cli(module: str) -> bool:
        return module == "producer.cli" or module.startswith("producer.cli.")

    graph = import_graph()
    library = [m for m in graph if m.split(".")[0] == "producer" and not in_cli(m)]
    assert "producer.client" in library
    assert [(m, sorted(filter(in_cli, graph[m]))) for m in library] == [(m, []) for m in library]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Which of our modules each of our modules imports, read from the source.

    Every import counts: at the top, under `TYPE_CHECKING`, or inside a function.
    `from package import name` counts as importing `package.name` when that is a
    module of ours, else as importing `package`.
    """
    paths = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{alias.name}"
                    if f"{node.module}.{alias.name}" in paths
                    else node.module
                    for alias in node.names
                ]
            graph[name].update(t for t in targets if t in paths and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_through_others() -> None:
    graph = import_graph()
    assert len(graph) > 80  # the packages were found and read
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle_and_leaves_what_only_leads_into_it() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


# dispatcher's rooms, lowest first: a module may import from its own level or below.
ROOM_LEVELS = {
    "config": 0,  # beside errors and redaction (dispatcher/*.py)
    "models": 0,  # the data model, which config's sections build on
    "routing": 1,
    "vendors": 1,
    "state": 2,
    "broker": 2,
    "runner": 3,
}


def level_of(module: str) -> int | None:
    """A dispatcher module's level (its room's; 0 for dispatcher/*.py); None elsewhere."""
    parts = module.split(".")
    if parts[0] != "dispatcher" or len(parts) == 1:
        return None  # another package, or dispatcher's __init__, which re-exports
    return ROOM_LEVELS.get(parts[1], 0)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imported in sorted(graph.items()):
        here = level_of(module)
        for target in sorted(imported):
            there = level_of(target)
            if here is not None and there is not None and there > here:
                found.append(f"{module} -> {target}")
    return found


def test_no_dispatcher_room_imports_from_a_higher_one() -> None:
    graph = import_graph()
    rooms = {module.split(".")[1] for module in graph if level_of(module) and "." in module}
    assert rooms == {"routing", "vendors", "state", "broker", "runner"}
    assert upward_imports(graph) == []


def test_an_import_from_a_lower_room_to_a_higher_one_is_found() -> None:
    graph = {"dispatcher.state.store": {"dispatcher.runner.job_runner", "dispatcher.models"}}
    assert upward_imports(graph) == ["dispatcher.state.store -> dispatcher.runner.job_runner"]
