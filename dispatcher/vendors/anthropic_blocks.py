"""Our OpenAI-shaped chat surface as Anthropic Messages has it: content blocks and tool fields.

Per the wire-format notes (tools page, section 3 and the table in 8.1):

- **Messages**: image parts become `image` blocks, a base64 `source` for a
  data URL (bare base64 and its `media_type`) and a `url` source for https
  (`detail` has no Anthropic form and is dropped). An assistant message with
  tool calls becomes blocks: the thinking blocks its reply came with (kept in
  `vendor_state`, key `anthropic_thinking`) first, then its text, then one
  `tool_use {id, name, input}` per call, the arguments parsed to the object
  Anthropic wants. A run of tool messages becomes one user message of
  `tool_result` blocks, with any user message right after it folded in
  behind them (results must come first, and all in one message).
- **Tools**: `{name, description, input_schema, strict}`; no parameters is an
  empty object schema. `tool_choice` is `auto` / `none` / `any` / `tool`, and
  `parallel_tool_calls: false` adds `disable_parallel_tool_use` to the first
  three forms that take it.
- **Structured output**: a json_schema format is Anthropic's own mechanism,
  `output_config.format {"type": "json_schema", "schema"}` (GA, no beta
  header), not a forced tool, so tools stay usable beside it; every object
  schema without `additionalProperties` gets `false`, as the SDK's
  transformer does and the API requires. Anthropic has no JSON-object mode:
  json_object is an instruction appended to the system prompt, and the
  runner parses the reply (a reply that is not JSON is `InvalidVendorOutput`).
- **seed**: Anthropic has no repeatable sampling; a request asking for it is
  refused (`InvalidRequest` naming `seed`) rather than silently sampled anew.

The way back is small: `tool_calls.arguments_text` writes a `tool_use` input as our
arguments text, and `thinking_state` keeps a reply's thinking blocks as the
`vendor_state` that `wire_messages` puts first in the next assistant turn.
"""

from __future__ import annotations

import json
from typing import Any

from dispatcher.errors import InvalidRequest
from dispatcher.models import (
    ImagePart,
    JsonObjectFormat,
    JsonSchemaFormat,
    Message,
    NamedToolChoice,
    Request,
    Role,
    TextPart,
)
from dispatcher.models.content import data_url_image

__all__ = [
    "JSON_OBJECT_INSTRUCTION",
    "THINKING_STATE_KEY",
    "THINKING_TYPES",
    "closed_schema",
    "image_block",
    "merged_extra_body",
    "output_config",
    "surface_fields",
    "thinking_state",
    "tool_choice",
    "tools",
    "wants_json_object",
    "wire_messages",
]

# The `vendor_state` key under which an assistant message keeps its thinking blocks.
THINKING_STATE_KEY = "anthropic_thinking"
# Anthropic has no JSON-object mode; the notes' advice is to instruct and validate.
JSON_OBJECT_INSTRUCTION = "Answer with one JSON object and nothing else: no prose, no code fences."
# The blocks of a reply that its next turn must hand back unchanged.
THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})
# Where a JSON Schema nests other schemas, by value and by map of values.
_SUBSCHEMA_KEYS = ("items", "additionalItems", "not", "if", "then", "else", "contains")
_SUBSCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")


def wire_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """The non-system messages as Anthropic's `messages` (tool results folded into user turns)."""
    wire: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        role = message.role
        if role is Role.SYSTEM:
            continue
        if role is Role.TOOL:
            result = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": message.text,
            }
            if _ends_in_results(wire):
                wire[-1]["content"].append(result)
            else:
                wire.append({"role": "user", "content": [result]})
        elif role is Role.USER and _ends_in_results(wire):
            wire[-1]["content"].extend(_blocks(message))
        elif role is Role.ASSISTANT and (message.tool_calls or message.vendor_state):
            wire.append({"role": "assistant", "content": _assistant_blocks(message, index)})
        elif type(message.content) is str:
            wire.append({"role": role.value, "content": message.content})
        else:
            wire.append({"role": role.value, "content": _blocks(message)})
    return wire


def _ends_in_results(wire: list[dict[str, Any]]) -> bool:
    """True when the last wire message is a user turn of tool results (text may follow)."""
    if not wire or wire[-1]["role"] != "user" or not isinstance(wire[-1]["content"], list):
        return False
    first = wire[-1]["content"][0]
    return isinstance(first, dict) and first.get("type") == "tool_result"


def _blocks(message: Message) -> list[dict[str, Any]]:
    """A user or assistant message's content as text and image blocks (empty text skipped)."""
    content = message.content
    if content is None:
        return []
    if type(content) is str:
        return [{"type": "text", "text": content}]
    blocks: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(image_block(part.image_url.url))
    return blocks


def image_block(url: str) -> dict[str, Any]:
    """An image block: a base64 source for a data URL, a url source for https."""
    if url[:5].lower() == "data:":
        media_type = data_url_image(url)[0]
        data = url.partition(",")[2]
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_blocks(message: Message, index: int) -> list[dict[str, Any]]:
    """Saved thinking blocks, then the text, then one `tool_use` block per call."""
    state = message.vendor_state or {}
    kept = state.get(THINKING_STATE_KEY)
    blocks: list[dict[str, Any]] = [
        dict(block)
        for block in (kept if isinstance(kept, list) else [])
        if isinstance(block, dict) and block.get("type") in THINKING_TYPES
    ]
    blocks += _blocks(message)
    for call in message.tool_calls or ():
        try:
            arguments = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise InvalidRequest(
                f"messages[{index}].tool_calls: the arguments of call {call.id!r} are not a "
                "JSON object, and Anthropic takes a call's input only as one"
            )
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return blocks


def surface_fields(request: Request) -> dict[str, Any]:
    """`tools`, `tool_choice` and `output_config`, as far as the request asks for them."""
    fields: dict[str, Any] = {}
    if request.tools:
        fields["tools"] = tools(request)
    choice = tool_choice(request)
    if choice is not None:
        fields["tool_choice"] = choice
    output = output_config(request)
    if output is not None:
        fields["output_config"] = output
    return fields


def merged_extra_body(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """`extra_body` to merge into `body`: its `output_config` (effort) joins ours, below it."""
    extra = dict(request.extra_body)
    given = extra.get("output_config")
    if "output_config" in body and isinstance(given, dict):
        extra["output_config"] = {**given, **body["output_config"]}
    return extra


def tools(request: Request) -> list[dict[str, Any]]:
    """`tools` as Anthropic declares them: flat, with `input_schema`."""
    declared = []
    for index, tool in enumerate(request.tools or ()):
        function = tool.function
        schema: dict[str, Any] = dict(function.parameters or {"type": "object", "properties": {}})
        kind = schema.setdefault("type", "object")
        if kind != "object":
            raise InvalidRequest(
                f"tools[{index}].function.parameters: Anthropic takes only an object schema "
                f"(type 'object'), not {kind!r}"
            )
        entry: dict[str, Any] = {"name": function.name}
        if function.description is not None:
            entry["description"] = function.description
        entry["input_schema"] = schema
        if function.strict is not None:
            entry["strict"] = function.strict
        declared.append(entry)
    return declared


def tool_choice(request: Request) -> dict[str, Any] | None:
    """Anthropic's `tool_choice` object, or None to leave the field out (auto, parallel)."""
    choice = request.tool_choice
    no_parallel = request.parallel_tool_calls is False
    if not request.tools or (choice is None and not no_parallel):
        # "none" without tools forbids what cannot happen anyway.
        return None
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, NamedToolChoice):
        wire: dict[str, Any] = {"type": "tool", "name": choice.function.name}
    else:
        wire = {"type": "any" if choice == "required" else "auto"}
    if no_parallel:
        wire["disable_parallel_tool_use"] = True
    return wire


def output_config(request: Request) -> dict[str, Any] | None:
    """`output_config.format` for a json_schema format; None for any other."""
    fmt = request.response_format
    if not isinstance(fmt, JsonSchemaFormat):
        return None
    return {"format": {"type": "json_schema", "schema": closed_schema(fmt.json_schema.schema_)}}


def wants_json_object(request: Request) -> bool:
    """True when the request asks for json_object, which Anthropic only gets as an instruction."""
    return isinstance(request.response_format, JsonObjectFormat)


def closed_schema(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` on every object schema that does not say."""
    if isinstance(schema, list):
        return [closed_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = dict(schema)
    for key in _SUBSCHEMA_KEYS:
        if isinstance(closed.get(key), dict):
            closed[key] = closed_schema(closed[key])
    for key in _SUBSCHEMA_LISTS:
        if isinstance(closed.get(key), list):
            closed[key] = closed_schema(closed[key])
    for key in _SUBSCHEMA_MAPS:
        if isinstance(closed.get(key), dict):
            closed[key] = {name: closed_schema(sub) for name, sub in closed[key].items()}
    kind = closed.get("type")
    is_object = kind == "object" or (isinstance(kind, list) and "object" in kind)
    if (is_object or "properties" in closed) and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


def thinking_state(thinking: tuple[dict[str, Any], ...]) -> dict[str, Any] | None:
    """`vendor_state` keeping a reply's thinking blocks; None when it has none."""
    return {THINKING_STATE_KEY: list(thinking)} if thinking else None
