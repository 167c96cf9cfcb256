"""Finds where our code touches a private attribute of a library we depend on.

A private attribute is a name with one leading underscore (`_raw`, not `__init__`).
It counts as the library's, not ours, when the library defines it (a method, a
class attribute, or an attribute assigned on `self`) and it is reached in one of
these ways in our source:

- `anything._name` read, written or called, unless `_name` is also a private
  attribute our own code defines and the receiver is not one of the library's
  classes named in the module (`Consumer._flush_events(self)` counts);
- `def _name` in a class of ours whose base is one of the library's classes and
  has that attribute (an override of a private hook);
- `getattr(x, "_name")`, `setattr(x, "_name", ...)`, `from lib import _name`;
- for httpx-aiohttp (0.x), any name imported from inside the package that its
  root does not export.

The scan is by name, from the source alone: it can miss an access whose name our
own code also uses, but it never needs the libraries' types.
"""

from __future__ import annotations

import ast
import functools
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["INTERNAL_MODULES", "LIBRARIES", "Access", "defined_private_names", "find_accesses"]

# The import names of the libraries whose internals the docs' table accounts for.
LIBRARIES = ("celery", "kombu", "httpx", "httpx_aiohttp", "redis")
# Libraries whose public API is what their root package exports: a name imported from
# one of their modules and not exported by the root is an internal (a 0.x library).
INTERNAL_MODULES = ("httpx_aiohttp",)


@dataclass(frozen=True, order=True)
class Access:
    """One library-private name reached from one of our files."""

    path: str  # relative to the repository root, with forward slashes
    name: str
    line: int


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and len(name) > 1


def defined_private_names(tree: ast.AST) -> set[str]:
    """Private names a module defines: methods, class attributes, `self._x = ...`."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(item.name)
                elif isinstance(item, ast.Assign):
                    names.update(t.id for t in item.targets if isinstance(t, ast.Name))
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(item.target.id)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for part in ast.walk(target):
                    if (
                        isinstance(part, ast.Attribute)
                        and isinstance(part.value, ast.Name)
                        and part.value.id in {"self", "cls"}
                    ):
                        names.add(part.attr)
    return {name for name in names if _is_private(name)}


@functools.cache
def _library_private_names(library: str) -> frozenset[str]:
    # Through the module's __path__: kombu and celery replace their module objects
    # (lazy attributes), leaving `find_spec` nothing to read once they are imported.
    names: set[str] = set()
    for root in importlib.import_module(library).__path__:
        for path in Path(root).rglob("*.py"):
            names |= defined_private_names(ast.parse(path.read_bytes(), filename=str(path)))
    return frozenset(names)


def _library_bindings(tree: ast.AST) -> dict[str, tuple[str, str | None]]:
    """Names this module binds to one of the libraries: local name -> (module, attribute)."""
    found: dict[str, tuple[str, str | None]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in LIBRARIES:
                for alias in node.names:
                    found[alias.asname or alias.name] = (node.module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in LIBRARIES:
                    # `import a.b` binds `a`; `import a.b as c` binds `c` to `a.b`.
                    module = alias.name if alias.asname else alias.name.split(".")[0]
                    found[alias.asname or module] = (module, None)
    return found


def _resolve(binding: tuple[str, str | None]) -> object | None:
    module_name, attribute = binding
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return module if attribute is None else getattr(module, attribute, None)


def _overrides(base: object | None, name: str, library_names: set[str]) -> bool:
    """Whether defining `name` in a subclass of `base` replaces one of the library's own."""
    if base is None:  # unresolvable: judge by the name alone
        return name in library_names
    return hasattr(base, name)


def _internal_imports(node: ast.ImportFrom) -> Iterator[str]:
    """Names imported from inside a library that exports a small root API (`__all__`)."""
    module = node.module or ""
    root = module.split(".")[0]
    if root not in INTERNAL_MODULES or module == root:
        return
    exported = set(getattr(importlib.import_module(root), "__all__", ()))
    for alias in node.names:
        if alias.name not in exported:
            yield alias.name


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _overridden_hooks(
    node: ast.ClassDef, bindings: dict[str, tuple[str, str | None]], library_names: set[str]
) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Private methods of a class of ours that replace one of its library base's."""
    bases = [
        _resolve(bindings[name])
        for name in (_root_name(base) for base in node.bases)
        if name in bindings
    ]
    for item in node.body:
        if (
            isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
            and _is_private(item.name)
            and any(_overrides(base, item.name, library_names) for base in bases)
        ):
            yield item


def _named_by_string(node: ast.Call, library_names: set[str]) -> str | None:
    """`getattr(x, "_name")` and its kin: the private name, if it is a library's."""
    if (
        isinstance(node.func, ast.Name)
        and node.func.id in {"getattr", "setattr", "hasattr", "delattr"}
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
        and node.args[1].value in library_names
    ):
        return node.args[1].value
    return None


def _imported_internals(node: ast.ImportFrom) -> Iterator[str]:
    """Private names, and internals of 0.x libraries, that a `from lib... import` takes."""
    if not node.module or node.level != 0 or node.module.split(".")[0] not in LIBRARIES:
        return
    yield from (alias.name for alias in node.names if _is_private(alias.name))
    yield from _internal_imports(node)


def _accesses_in(
    tree: ast.AST, path: str, library_names: set[str], ours: set[str]
) -> Iterator[Access]:
    bindings = _library_bindings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in library_names:
            if node.attr not in ours or _root_name(node.value) in bindings:
                yield Access(path, node.attr, node.lineno)
        elif isinstance(node, ast.ClassDef):
            for hook in _overridden_hooks(node, bindings, library_names):
                yield Access(path, hook.name, hook.lineno)
        elif isinstance(node, ast.Call):
            name = _named_by_string(node, library_names)
            if name is not None:
                yield Access(path, name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            for name in _imported_internals(node):
                yield Access(path, name, node.lineno)


def find_accesses(root: Path, packages: tuple[str, ...]) -> list[Access]:
    """Every access from `packages` (under `root`) to a private name of `LIBRARIES`."""
    library_names: set[str] = set()
    for library in LIBRARIES:
        library_names |= _library_private_names(library)
    trees = {
        path: ast.parse(path.read_bytes(), filename=str(path))
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    }
    ours: set[str] = set()
    for tree in trees.values():
        ours |= defined_private_names(tree)
    found: list[Access] = []
    for path, tree in trees.items():
        relative = path.relative_to(root).as_posix()
        found.extend(_accesses_in(tree, relative, library_names, ours))
    return sorted(set(found))
