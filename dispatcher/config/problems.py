"""Readable validation problems: one line each, with the path of the value at fault.

pydantic collects every error of a validation in one `ValidationError`. This
module rebuilds such errors with extra problems of our own (so an unknown field
or a dangling reference is reported next to every other mistake, not one round
later) and turns them into lines such as ``vendors.openai.rpm: must be greater
than 0`` that never repeat the offending input, which may be a secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

__all__ = ["custom_error", "describe", "format_path", "rebuild"]

Loc = tuple[int | str, ...]


def custom_error(kind: str, loc: Loc, message: str, value: Any = None) -> InitErrorDetails:
    """An error of our own, ready to be merged into a `ValidationError` by `rebuild`."""
    # The message goes through the context so braces in it are never read as fields.
    return InitErrorDetails(
        type=PydanticCustomError(kind, "{message}", {"message": message}),
        loc=loc,
        input=value,
    )


def rebuild(
    title: str,
    errors: Iterable[ErrorDetails],
    extra: Iterable[InitErrorDetails] = (),
    *,
    replace: Mapping[int, InitErrorDetails] | None = None,
) -> ValidationError:
    """A new `ValidationError` holding `errors` (messages kept as they are) plus `extra`.

    `replace` maps an index in `errors` to the error that takes its place.
    """
    details: list[InitErrorDetails] = []
    for index, error in enumerate(errors):
        if replace and index in replace:
            details.append(replace[index])
        else:
            details.append(custom_error(error["type"], error["loc"], error["msg"], error["input"]))
    details.extend(extra)
    return ValidationError.from_exception_data(title, details)


def format_path(loc: Sequence[int | str], rename: Mapping[str, str] | None = None) -> str:
    """``('routing_rules', 0, 'vendor')`` -> ``routing_rules[0].vendor``."""
    parts: list[str] = []
    for index, part in enumerate(loc):
        if part == "[key]":  # pydantic's marker for an error in a mapping's key
            continue
        if isinstance(part, int):
            parts.append(f"[{part}]")
            continue
        name = rename.get(part, part) if rename and index == 0 else part
        parts.append(f".{name}" if parts else name)
    return "".join(parts) or "(top level)"


_REWRITES: tuple[tuple[str, str], ...] = (
    ("Value error, ", ""),
    ("Assertion failed, ", ""),
    ("Input should be ", "must be "),
    ("Field required", "is required"),
    ("Input is a valid ", "must not be a "),
)


def _message(error: ErrorDetails) -> str:
    message = error["msg"]
    for old, new in _REWRITES:
        if message.startswith(old):
            message = new + message[len(old) :]
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    if error["loc"] and error["loc"][-1] == "[key]":
        message = (
            f"this name {message}; YAML reads off/on/yes/no and numbers as other types, "
            "so quote such names ('off')"
        )
    return message


def describe(exc: ValidationError, rename: Mapping[str, str] | None = None) -> list[str]:
    """One ``path: problem`` line per error, in the order pydantic found them."""
    return [
        f"{format_path(error['loc'], rename)}: {_message(error)}"
        for error in exc.errors(include_url=False, include_input=False)
    ]
