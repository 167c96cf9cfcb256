"""Tests for `dispatcher.config.file`: reading the file and expanding `${VAR}` in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.config.file import Unresolved, expand_variables, read_config_file
from dispatcher.errors import ConfigError


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def read_problems(path: Path) -> list[str]:
    """The problems of the ConfigError that read_config_file must raise."""
    with pytest.raises(ConfigError) as caught:
        read_config_file(path)
    return caught.value.problems


# --- expand_variables ---------------------------------------------------------------------


def test_expand_variables_expands_strings_inside_nested_dicts_and_lists() -> None:
    data = {
        "vendors": {
            "local": {
                "base_url": "https://${HOST}/v1",
                "models": ["${MODEL}", "fixed", {"deep": ["x-${MODEL}-y"]}],
            }
        },
        "top": "${HOST}",
    }

    expanded = expand_variables(data, {"HOST": "llm.internal", "MODEL": "llama3"})

    assert expanded == {
        "vendors": {
            "local": {
                "base_url": "https://llm.internal/v1",
                "models": ["llama3", "fixed", {"deep": ["x-llama3-y"]}],
            }
        },
        "top": "llm.internal",
    }


def test_expand_variables_leaves_non_strings_and_keys_alone() -> None:
    data = {"${KEY}": 1, "rpm": 60, "enabled": True, "ratio": 0.5, "nothing": None}

    assert expand_variables(data, {"KEY": "replaced"}) == data


def test_expand_variables_does_not_change_its_input() -> None:
    data = {"a": ["${X}"]}

    expand_variables(data, {"X": "1"})

    assert data == {"a": ["${X}"]}


def test_a_missing_variable_gives_an_unresolved_marker_naming_it() -> None:
    expanded = expand_variables({"a": {"b": ["${NOT_SET_HERE}"]}}, {})

    marker = expanded["a"]["b"][0]
    assert marker == Unresolved("NOT_SET_HERE")
    assert str(marker) == "${NOT_SET_HERE}"


def test_a_missing_variable_inside_a_longer_string_makes_the_whole_value_unresolved() -> None:
    expanded = expand_variables("https://${HOST}:${PORT}/v1", {"HOST": "h"})

    assert expanded == Unresolved("PORT")


def test_the_first_missing_variable_of_a_value_is_the_one_reported() -> None:
    assert expand_variables("${FIRST}-${SECOND}", {}) == Unresolved("FIRST")


def test_a_variable_set_to_the_empty_string_with_no_default_is_unresolved() -> None:
    # Documented behaviour: only ${VAR:-default} treats empty as unset, but the
    # code treats an empty value as missing for ${VAR} too; pin what it does.
    assert expand_variables("${EMPTY}", {"EMPTY": ""}) == Unresolved("EMPTY")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "fallback"),
        ({"OPT": ""}, "fallback"),
        ({"OPT": "given"}, "given"),
    ],
    ids=["unset", "empty", "set"],
)
def test_a_default_applies_when_the_variable_is_unset_or_empty(
    environ: dict[str, str], expected: str
) -> None:
    assert expand_variables("${OPT:-fallback}", environ) == expected


def test_an_empty_default_gives_an_empty_string() -> None:
    assert expand_variables("prefix-${OPT:-}", {}) == "prefix-"


def test_a_double_dollar_brace_is_a_literal_dollar_brace() -> None:
    assert expand_variables("$${HOME} and ${USER}", {"HOME": "/h", "USER": "u"}) == (
        "${HOME} and u"
    )


def test_a_variable_value_is_not_expanded_again() -> None:
    assert expand_variables("${OUTER}", {"OUTER": "${INNER}", "INNER": "no"}) == "${INNER}"


def test_an_environment_value_with_yaml_syntax_stays_one_string() -> None:
    value = "a: b\n- c\n{x: [1, 2]}"

    assert expand_variables({"note": "${NOTE}"}, {"NOTE": value}) == {"note": value}


def test_a_dollar_without_braces_is_left_as_it_is() -> None:
    assert expand_variables("cost $5 and $HOME", {"HOME": "/h"}) == "cost $5 and $HOME"


# --- read_config_file ---------------------------------------------------------------------


def test_a_yaml_file_is_read_as_its_top_level_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "vendors:\n  openai:\n    rpm: 60\ndefault_vendor: openai\n")

    assert read_config_file(path) == {
        "vendors": {"openai": {"rpm": 60}},
        "default_vendor": "openai",
    }


def test_a_json_file_is_read_as_its_top_level_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", '{"vendors": {"openai": {"rpm": 60}}}')

    assert read_config_file(path) == {"vendors": {"openai": {"rpm": 60}}}


def test_variables_are_not_expanded_while_reading(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "key: ${SOMETHING}\n")

    assert read_config_file(path) == {"key": "${SOMETHING}"}


def test_a_missing_file_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    assert read_problems(path) == [f"LLMDISPATCH_CONFIG ({path}): file not found"]


def test_invalid_yaml_is_reported_with_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "a: 1\nb: [1, 2\nc: 3\n")

    [problem] = read_problems(path)
    # The words are the parser's (libyaml's where PyYAML has it); the place is ours.
    assert problem.startswith(f"LLMDISPATCH_CONFIG ({path}): invalid YAML at line 3, column 2: ")
    assert "expected ',' or ']'" in problem


def test_a_tab_indentation_in_yaml_is_reported_with_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "a: 1\n\tb: 2\n")

    (problem,) = read_problems(path)

    assert problem.startswith(f"LLMDISPATCH_CONFIG ({path}): invalid YAML at line 2, column 1:")


def test_invalid_json_is_reported_with_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", '{"a": 1,\n "b": }')

    assert read_problems(path) == [
        f"LLMDISPATCH_CONFIG ({path}): invalid JSON at line 2, column 7: Expecting value"
    ]


def test_a_duplicate_key_in_yaml_is_refused_with_its_position(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "vendors:\n  openai:\n    rpm: 1\n    rpm: 2\n")

    assert read_problems(path) == [
        f"LLMDISPATCH_CONFIG ({path}): invalid YAML at line 4, column 5: duplicate key 'rpm'"
    ]


def test_a_duplicate_top_level_key_in_yaml_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "default_vendor: a\nvendors: {}\ndefault_vendor: b\n")

    assert read_problems(path) == [
        f"LLMDISPATCH_CONFIG ({path}): invalid YAML at line 3, column 1: "
        "duplicate key 'default_vendor'"
    ]


def test_a_duplicate_key_in_json_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", '{"vendors": {"openai": {"rpm": 1, "rpm": 2}}}')

    assert read_problems(path) == [
        f"LLMDISPATCH_CONFIG ({path}): invalid JSON: duplicate key 'rpm'"
    ]


def test_an_unhashable_yaml_key_is_a_config_error_not_a_crash(tmp_path: Path) -> None:
    # A complex key ("? [a, b]") is valid YAML syntax but cannot be a dict key.
    path = write(tmp_path, "c.yaml", "? [a, b]\n: 1\n")

    (problem,) = read_problems(path)

    assert problem.startswith(f"LLMDISPATCH_CONFIG ({path}): invalid YAML")


def test_non_utf8_bytes_are_refused_with_their_offset(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", b"a: \xff\xfe\n")

    assert read_problems(path) == [f"LLMDISPATCH_CONFIG ({path}): not UTF-8 text (byte 3)"]


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("c.yaml", "- a\n- b\n", "list"),
        ("c.json", "[1, 2]", "list"),
        ("c.yaml", "just a string\n", "str"),
        ("c.json", "42", "int"),
    ],
)
def test_a_top_level_that_is_not_a_mapping_is_refused(
    tmp_path: Path, name: str, content: str, kind: str
) -> None:
    path = write(tmp_path, name, content)

    assert read_problems(path) == [
        f"LLMDISPATCH_CONFIG ({path}): the top level must be a mapping of keys, not {kind}"
    ]


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n", "---\n"])
def test_an_empty_yaml_file_gives_an_empty_mapping(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, "c.yaml", content)

    assert read_config_file(path) == {}


def test_yaml_python_tags_are_refused_by_the_safe_loader(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "a: !!python/object/apply:os.system ['true']\n")

    (problem,) = read_problems(path)

    assert problem.startswith(f"LLMDISPATCH_CONFIG ({path}): invalid YAML at line 1, column 4:")
    assert "could not determine a constructor" in problem


def test_a_file_with_any_other_suffix_is_read_as_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "llmdispatch.conf", "vendors:\n  mock: {}\n")

    assert read_config_file(path) == {"vendors": {"mock": {}}}


# --- bounded: an alias bomb, an endless file ---------------------------------------------


def billion_laughs(depth: int) -> str:
    """A few hundred bytes of YAML whose aliases expand to 9**depth values."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    names = "abcdefghijklmnop"
    for level in range(1, depth):
        prev, name = names[level - 1], names[level]
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    lines.append(f"vendors: {{mock: {{type: mock, models: *{names[depth - 1]}}}}}")
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(20)
def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    text = billion_laughs(9)  # 9**9: 387 million strings
    assert len(text.encode()) < 1024
    path = write(tmp_path, "bomb.yaml", text)

    [problem] = read_problems(path)

    assert problem == (
        f"LLMDISPATCH_CONFIG ({path}): expands to more than 50,000 values "
        "(YAML aliases count as copies): refused"
    )


def test_aliases_that_expand_modestly_are_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "ok.yaml", billion_laughs(3))  # 729 strings

    data = read_config_file(path)

    assert len(data["vendors"]["mock"]["models"]) == 9
    assert data["vendors"]["mock"]["models"][0][0] == ["lol"] * 9


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "loop.yaml", "a: &a [1, *a]\n")

    assert read_problems(path) == [
        f"LLMDISPATCH_CONFIG ({path}): a YAML alias refers to a value that contains it"
    ]


@pytest.mark.timeout(20)
def test_an_endless_file_is_refused_after_a_megabyte() -> None:
    [problem] = read_problems(Path("/dev/zero"))

    assert problem == "LLMDISPATCH_CONFIG (/dev/zero): larger than 1024 KiB"
