"""Reads the optional configuration file (YAML or JSON) and expands `${VAR}` in it.

String values may use ``${VAR}``, which needs VAR set and not empty (an empty
key or URL is never what was meant), and ``${VAR:-default}``, which gives the
default when VAR is unset or empty; ``$${`` is a literal ``${``. Expansion
happens after parsing, value by value, so an environment value can never change
the file's structure. A variable without a value leaves an `Unresolved`
marker, which `Settings` reports with the path of the value next to every other
problem, instead of stopping at the first. Duplicate keys are refused rather
than letting the last one silently win.

The file is bounded: at most `MAX_CONFIG_BYTES` are read (so a path such as
/dev/zero fails at once), and a document that would expand to more than
`MAX_CONFIG_VALUES` values is refused before anything is built from it: YAML
aliases are counted as what they expand to, so a few hundred bytes of nested
aliases (a "billion laughs") cannot hang a process or fill its memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dispatcher.errors import ConfigError

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_VALUES",
    "Unresolved",
    "expand_variables",
    "read_config_file",
]

# A configuration is a page or two of YAML; a megabyte is far past any real one.
MAX_CONFIG_BYTES = 1024 * 1024
# Values (scalars, lists, mappings) the document may expand to, aliases counted as
# copies: thousands of vendors and rules fit; parsing and checking stay well under 1 s.
MAX_CONFIG_VALUES = 50_000

_VARIABLE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Unresolved:
    """Stands for a value whose `${VAR}` had no value and no default."""

    variable: str

    def __str__(self) -> str:
        return f"${{{self.variable}}}"


def expand_variables(data: Any, environ: Mapping[str, str]) -> Any:
    """`data` with `${VAR}` and `${VAR:-default}` expanded in every string value."""
    if isinstance(data, dict):
        return {key: expand_variables(value, environ) for key, value in data.items()}
    if isinstance(data, list):
        return [expand_variables(item, environ) for item in data]
    if isinstance(data, str):
        return _expand_string(data, environ)
    return data


def _expand_string(text: str, environ: Mapping[str, str]) -> str | Unresolved:
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value:
            return value
        if default is not None:
            return default
        missing.append(name)
        return ""

    expanded = _VARIABLE.sub(substitute, text)
    return Unresolved(missing[0]) if missing else expanded


# libyaml's parser where PyYAML has it (its wheels do): several times faster.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """A safe YAML loader that refuses a key given twice in one mapping."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "found an unhashable key (a list or mapping)", key_node.start_mark
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    mapping: dict[Any, Any] = loader.construct_mapping(node)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def _unique_json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's top-level mapping, parsed as JSON (`.json`) or YAML (anything else).

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8, malformed, nested too
            deeply, or not a mapping.
    """
    where = f"LLMDISPATCH_CONFIG ({path})"
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError([f"{where}: larger than {MAX_CONFIG_BYTES // 1024} KiB"])
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{where}: file not found"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{where}: not UTF-8 text (byte {exc.start})"]) from None
    except OSError as exc:
        raise ConfigError([f"{where}: cannot read: {exc.strerror}"]) from None

    try:
        data = _parsed(text, where, as_json=path.suffix.lower() == ".json")
    except RecursionError:  # both parsers recurse once per level of nesting
        raise ConfigError([f"{where}: nested too deeply"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{where}: the top level must be a mapping of keys, not {type(data).__name__}"]
        )
    not_text = [key for key in data if not isinstance(key, str)]
    if not_text:
        raise ConfigError([f"{where}: top-level key {key!r} is not a name" for key in not_text])
    return data


def _parsed(text: str, where: str, *, as_json: bool) -> Any:
    """The document in `text`; a `ConfigError` saying where it is malformed."""
    if as_json:
        try:
            return json.loads(text, object_pairs_hook=_unique_json_object)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                [f"{where}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]
            ) from None
        except ValueError as exc:
            raise ConfigError([f"{where}: invalid JSON: {exc}"]) from None
    loader = _UniqueKeyLoader(text)
    try:
        _check_written_size(text, where)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node, where)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        position = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"{where}: invalid YAML{position}: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{where}: invalid YAML: {exc}"]) from None
    finally:
        loader.dispose()


def _too_large(where: str) -> ConfigError:
    return ConfigError(
        [
            f"{where}: expands to more than {MAX_CONFIG_VALUES:,} values "
            "(YAML aliases count as copies): refused"
        ]
    )


def _check_written_size(text: str, where: str) -> None:
    """Refuse, from the parser's events and before any node is built, a file that writes
    more than `MAX_CONFIG_VALUES` values (stopping as soon as it has seen that many)."""
    written = 0
    parser = _UniqueKeyLoader(text)
    try:
        while (event := parser.get_event()) is not None:
            if isinstance(event, _VALUE_EVENTS):
                written += 1
                if written > MAX_CONFIG_VALUES:
                    raise _too_large(where)
    finally:
        parser.dispose()


_VALUE_EVENTS = (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)


def _check_expanded_size(root: yaml.Node, where: str) -> None:
    """Refuse a document that expands to more than `MAX_CONFIG_VALUES` values.

    Counts each node once per place it appears (an alias counts as the copy it
    becomes), memoised per node, so the count costs time in the nodes written, not
    in the values they expand to. An alias inside its own anchor is refused too.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConfigError([f"{where}: a YAML alias refers to a value that contains it"])
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_CONFIG_VALUES:
                raise _too_large(where)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root)
