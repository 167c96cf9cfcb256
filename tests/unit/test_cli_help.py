"""`--help` of every `llmdispatch` command: flags read as flags, with no value placeholder."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from producer.cli.root import app

runner = CliRunner()
# What a help page shows when it presents a flag as if it took a value.
VALUE_PLACEHOLDERS = ("<bool>", "BOOLEAN")


def command_paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The argument path to every command and group under `command`, itself included."""
    paths = [path]
    for name, sub in getattr(command, "commands", {}).items():
        paths += command_paths(sub, (*path, name))
    return paths


COMMANDS = command_paths(typer.main.get_command(app))


def test_every_command_is_covered() -> None:
    names = {" ".join(path) for path in COMMANDS}
    assert {"", "demo", "send", "batch", "batch cancel", "config check"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "llmdispatch")
def test_help_shows_no_value_placeholder_for_a_flag(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"])

    assert result.exit_code == 0, result.output
    assert "--help" in result.stdout
    for placeholder in VALUE_PLACEHOLDERS:
        assert placeholder not in result.stdout


def options_of(help_text: str) -> dict[str, list[str]]:
    """Each option row of a help page: its name, then the words after it on that line."""
    rows = help_text.split("Options:", 1)[1].splitlines()
    return {
        words[0]: words[1:]
        for words in (row.split() for row in rows)
        if words and words[0].startswith("--")
    }


def test_a_flag_is_listed_without_a_value_and_an_option_with_its_type() -> None:
    options = options_of(runner.invoke(app, ["demo", "--help"]).stdout)

    assert options["--keep"][0] == "Leave"
    assert options["--prompts"][:2] == ["<int", "range>"]
    assert options["--help"][0] == "Show"
