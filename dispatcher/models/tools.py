"""Tool calling, as OpenAI Chat Completions has it: declared tools, the choice, and the calls.

A request declares `Tool`s (a function's name, description and JSON-schema
`parameters`) and may force or forbid them with a tool choice. A reply (and an
assistant message sent back in the next turn) carries `ToolCall`s: an id, the
function's name and its arguments as the JSON **text** the model wrote; the
answer to each goes back as a `tool` message naming the call's id.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, JsonValue, StringConstraints

from dispatcher.errors import InvalidVendorOutput
from dispatcher.models.base import Name, StrictModel, Text

__all__ = [
    "FunctionCall",
    "FunctionDefinition",
    "NamedFunction",
    "NamedToolChoice",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolChoiceMode",
    "ToolName",
    "check_json_schema",
]

# OpenAI's documented rule for function names; Anthropic, Gemini and Bedrock all accept it.
ToolName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_-]{1,64}$", strict=True)]


def check_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` if it is a valid JSON Schema (by its own `$schema`, else draft 2020-12)."""
    import jsonschema  # noqa: PLC0415 - costly; only requests with tools or formats need it

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path)
        raise ValueError(f"not a valid JSON Schema{f' at {where}' if where else ''}: "
                         f"{exc.message}") from None  # fmt: skip
    return schema


JsonSchema = Annotated[dict[str, JsonValue], AfterValidator(check_json_schema)]


class FunctionDefinition(StrictModel):
    """A function the model may call: its name, what it does, and its arguments' schema."""

    model_config = ConfigDict(frozen=True)

    name: ToolName
    description: Text | None = None
    parameters: JsonSchema | None = Field(
        default=None, description="JSON Schema of the arguments object; None: no arguments."
    )
    strict: bool | None = Field(
        default=None, description="True: the vendor must keep to the schema, and we check it."
    )


class Tool(StrictModel):
    """A tool the model may call (only functions exist)."""

    model_config = ConfigDict(frozen=True)

    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(StrictModel):
    """The name of the one function a named tool choice forces."""

    model_config = ConfigDict(frozen=True)

    name: ToolName


class NamedToolChoice(StrictModel):
    """`{"type": "function", "function": {"name": ...}}`: the model must call that tool."""

    model_config = ConfigDict(frozen=True)

    type: Literal["function"] = "function"
    function: NamedFunction


# "auto": the model decides; "none": no calls; "required": at least one call.
ToolChoiceMode = Literal["auto", "none", "required"]
# Those, or one named tool.
ToolChoice = ToolChoiceMode | NamedToolChoice


class FunctionCall(StrictModel):
    """The function a tool call calls, with its arguments as the JSON text the model wrote."""

    model_config = ConfigDict(frozen=True)

    name: ToolName
    arguments: str = Field(default="", description="JSON text; may be invalid unless strict.")


class ToolCall(StrictModel):
    """One call the model asked for; send it back unchanged in the next assistant message."""

    model_config = ConfigDict(frozen=True)

    id: Name
    type: Literal["function"] = "function"
    function: FunctionCall

    @property
    def name(self) -> str:
        """The called function's name."""
        return self.function.name

    @property
    def arguments(self) -> str:
        """The arguments as the JSON text the model wrote."""
        return self.function.arguments

    def parsed_arguments(self) -> Any:
        """The arguments parsed (empty text is `{}`); `InvalidVendorOutput` if not JSON."""
        text = self.function.arguments
        if not text.strip():
            return {}
        try:
            return json.loads(text)
        except ValueError as exc:
            raise InvalidVendorOutput(
                f"the arguments of tool call {self.id!r} ({self.name}) are not JSON: {exc}",
                raw_text=text,
            ) from None


class ToolCallDelta(StrictModel):
    """A piece of a streamed tool call, as a stream event carries it (OpenAI's shape).

    The first piece of call `index` has its `id` and `name`; the `arguments`
    pieces of one index, joined in order, are its arguments' JSON text.
    """

    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0, description="Which call of the reply, counted from 0.")
    id: str | None = None
    name: str | None = None
    arguments: str = ""
