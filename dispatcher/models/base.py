"""What every model of ours is built on: `StrictModel`, the checked text types, `utc_now`.

An unknown field's error names it and lists the accepted ones, so a typo
(`max_token=`) fails loudly instead of being dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)

from dispatcher.config.problems import custom_error, rebuild

__all__ = [
    "Name",
    "NonEmptyStr",
    "StrictModel",
    "Text",
    "VendorName",
    "utc_now",
]

# Vendor names become queue names (`llm.<vendor>`) and Redis key parts, so they
# are kept to a small, safe alphabet.
VendorName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", strict=True)]


def _no_lone_surrogates(value: str) -> str:
    """Text that UTF-8 can carry: a lone surrogate (from a JSON `\\ud800`) cannot."""
    if any("\ud800" <= char <= "\udfff" for char in value):
        raise ValueError("contains a lone surrogate (not valid Unicode text)")
    return value


def _no_control_characters(value: str) -> str:
    """A name printed on one line: no control characters (CR, LF, NUL, ESC, ...)."""
    _no_lone_surrogates(value)
    if any(char < " " or "\x7f" <= char <= "\x9f" for char in value):
        raise ValueError("contains a control character")
    return value


# Free text (a prompt, a stop sequence, a metadata value): any character but lone surrogates.
Text = Annotated[str, AfterValidator(_no_lone_surrogates)]
NonEmptyStr = Annotated[str, StringConstraints(min_length=1), AfterValidator(_no_lone_surrogates)]
# Names shown in lists, logs and URLs (a model, a user, a metadata key): one line of text.
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=256), AfterValidator(_no_control_characters)
]


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class StrictModel(BaseModel):
    """Base for our models: an unknown field is refused, naming the accepted ones."""

    # JSON has no infinity or NaN: such a value would silently become null in Redis.
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    @model_validator(mode="wrap")
    @classmethod
    def _name_accepted_fields(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # pydantic reports an unknown field at its own path beside every other error;
        # this only rewrites those messages so they list what would have been accepted.
        try:
            return handler(data)
        except ValidationError as exc:
            errors = exc.errors()
            unknown = {
                index: error
                for index, error in enumerate(errors)
                if error["type"] == "extra_forbidden" and len(error["loc"]) == 1
            }
            tidied = {
                index: loc
                for index, error in enumerate(errors)
                if (loc := cls._tidy_loc(error["loc"])) != error["loc"]
            }
            if not unknown and not tidied:
                raise
            accepted = ", ".join(sorted(f.alias or n for n, f in cls.model_fields.items()))
            replace = {
                index: custom_error(error["type"], tidied[index], error["msg"], error["input"])
                for index, error in enumerate(errors)
                if index in tidied
            }
            replace.update(
                (
                    index,
                    custom_error(
                        "unknown_field",
                        error["loc"],
                        f"unknown field {error['loc'][0]!r} for {cls.__name__}; "
                        f"accepted fields: {accepted}",
                        error["input"],
                    ),
                )
                for index, error in unknown.items()
            )
            raise rebuild(cls.__name__, errors, replace=replace) from None

    @classmethod
    def _tidy_loc(cls, loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
        """An error's path without the union branch labels pydantic adds (none here)."""
        return loc
