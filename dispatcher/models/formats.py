"""What shape the reply's text must have: plain text, any JSON object, or JSON by a schema.

`{"type": "text"}`, `{"type": "json_object"}` or `{"type": "json_schema",
"json_schema": {"name", "schema", "description", "strict"}}`, as OpenAI Chat
Completions has them. A JSON format's `parse` turns the reply's text into the
value `Response.parsed` holds; with `strict` a json_schema format also checks
the value against the schema (the `jsonschema` library). Text that does not
parse, or does not match, is `InvalidVendorOutput` keeping the raw text.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from dispatcher.errors import InvalidVendorOutput
from dispatcher.models.base import StrictModel, Text
from dispatcher.models.tools import JsonSchema, ToolName

__all__ = [
    "JsonObjectFormat",
    "JsonSchemaFormat",
    "JsonSchemaSpec",
    "ResponseFormat",
    "TextFormat",
    "check_against_schema",
    "parse_json_text",
]


def parse_json_text(text: str, what: str = "the reply") -> Any:
    """`text` parsed as JSON; `InvalidVendorOutput` keeping the text when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidVendorOutput(
            f"{what} is not valid JSON ({exc}); the raw text is kept in raw_text",
            raw_text=text,
        ) from None


def check_against_schema(value: Any, schema: dict[str, Any], text: str, what: str) -> None:
    """Raise `InvalidVendorOutput` (keeping `text`) unless `value` matches `schema`."""
    import jsonschema  # noqa: PLC0415 - costly; only strict formats and tools need it

    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise InvalidVendorOutput(
            f"{what} does not match its schema at {where}: {error.message}", raw_text=text
        )


class TextFormat(StrictModel):
    """Plain text, as without a format."""

    model_config = ConfigDict(frozen=True)

    type: Literal["text"]

    def parse(self, text: str) -> Any:
        """Nothing to parse: None."""
        return None


class JsonObjectFormat(StrictModel):
    """Any JSON value (OpenAI: the messages must mention "json")."""

    model_config = ConfigDict(frozen=True)

    type: Literal["json_object"]

    def parse(self, text: str) -> Any:
        """The reply's text parsed as JSON."""
        return parse_json_text(text)


class JsonSchemaSpec(StrictModel):
    """The schema a json_schema format names, and whether the vendor must keep to it."""

    # `schema` would shadow a BaseModel attribute: the field is `schema_`, read and
    # written as `schema`.
    model_config = ConfigDict(
        frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    name: ToolName
    description: Text | None = None
    schema_: JsonSchema = Field(alias="schema")
    strict: bool | None = Field(
        default=None, description="True: the vendor must keep to the schema, and we check it."
    )


class JsonSchemaFormat(StrictModel):
    """JSON matching a schema; checked against it here when `strict`."""

    model_config = ConfigDict(frozen=True)

    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec

    def parse(self, text: str) -> Any:
        """The reply's text parsed as JSON, and checked against the schema when strict."""
        value = parse_json_text(text)
        if self.json_schema.strict:
            check_against_schema(
                value, self.json_schema.schema_, text, f"the reply ({self.json_schema.name})"
            )
        return value


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]
