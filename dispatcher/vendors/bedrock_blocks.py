"""Our OpenAI-shaped chat surface as Bedrock Converse has it: content blocks and tool config.

Per the wire-format notes (tools page, section 7, and the table in 8.1):

- **Messages**: text parts are `{"text"}` blocks (empty ones are left out:
  Converse refuses blank text), data-URL images are `{"image": {"format",
  "source": {"bytes": <base64>}}}` (`format` without `image/`). Converse
  fetches no HTTP URL, and building a request never downloads, so an https
  image is refused naming the part. An assistant message is its saved
  `reasoningContent` blocks (`vendor_state`, key `bedrock_reasoning`) first,
  then its text, then one `toolUse {toolUseId, name, input}` per call, the
  arguments parsed to the object Converse wants. A run of tool messages is one
  user message of `toolResult` blocks (`{"json": ...}` for a JSON object,
  else `{"text"}`), with a user message right after folded in behind them.
- **Tools**: `toolConfig.tools[].toolSpec {name, description, inputSchema:
  {json}, strict}`; `toolChoice` `{"auto": {}}`, `{"any": {}}` for
  "required", `{"tool": {"name"}}` for a named one. Converse has no "none":
  the tools are left out, unless the history holds tool turns, which Converse
  refuses without a `toolConfig` (then the tools go, with no choice). It has
  no switch for one call per reply: `parallel_tool_calls: false` is refused.
- **Structured output**: a json_schema format is `outputConfig.textFormat`
  with the schema as a JSON *string*; json_object (no such mode) is an
  instruction appended to the system prompt, and the worker checks the reply.
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
from dispatcher.vendors.anthropic_blocks import JSON_OBJECT_INSTRUCTION

__all__ = [
    "REASONING_STATE_KEY",
    "output_config",
    "reasoning_state",
    "system_blocks",
    "tool_config",
    "wire_messages",
]

# The `vendor_state` key under which an assistant message keeps its reasoning blocks.
REASONING_STATE_KEY = "bedrock_reasoning"


def system_blocks(request: Request) -> list[dict[str, Any]]:
    """The system messages as `system` text blocks, plus the JSON instruction if asked."""
    texts = [m.text for m in request.messages if m.role is Role.SYSTEM and m.text]
    if isinstance(request.response_format, JsonObjectFormat):
        texts.append(JSON_OBJECT_INSTRUCTION)
    return [{"text": text} for text in texts]


def wire_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """The non-system messages as Converse `messages` (tool results folded into user turns)."""
    wire: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        role = message.role
        if role is Role.SYSTEM:
            continue
        if role is Role.TOOL:
            result = {"toolResult": _tool_result(message)}
            if _ends_in_results(wire):
                wire[-1]["content"].append(result)
            else:
                wire.append({"role": "user", "content": [result]})
        elif role is Role.USER:
            blocks = _blocks(message, index)
            if _ends_in_results(wire):
                wire[-1]["content"].extend(blocks)
            else:
                wire.append({"role": "user", "content": blocks})
        else:
            wire.append({"role": "assistant", "content": _assistant_blocks(message, index)})
    return wire


def _ends_in_results(wire: list[dict[str, Any]]) -> bool:
    """True when the last wire message is a user turn of tool results."""
    if not wire or wire[-1]["role"] != "user" or not wire[-1]["content"]:
        return False
    return "toolResult" in wire[-1]["content"][0]


def _tool_result(message: Message) -> dict[str, Any]:
    text = message.text
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    content = [{"json": value}] if isinstance(value, dict) else [{"text": text or "(empty)"}]
    return {"toolUseId": message.tool_call_id, "content": content, "status": "success"}


def _blocks(message: Message, index: int) -> list[dict[str, Any]]:
    """A message's content as text and image blocks (empty text left out)."""
    content = message.content
    if content is None:
        return []
    if type(content) is str:
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for number, part in enumerate(content):
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(_image_block(part.image_url.url, f"messages[{index}].content[{number}]"))
    return blocks


def _image_block(url: str, where: str) -> dict[str, Any]:
    """A data-URL image as an `image` block; Converse takes no HTTP URL."""
    if url[:5].lower() != "data:":
        raise InvalidRequest(
            f"{where}.image_url: Bedrock fetches no URL; send the image as a base64 data URL"
        )
    media_type = data_url_image(url)[0]
    return {
        "image": {
            "format": media_type.removeprefix("image/"),
            "source": {"bytes": url.partition(",")[2]},
        }
    }


def _assistant_blocks(message: Message, index: int) -> list[dict[str, Any]]:
    """Saved reasoning blocks, then the text, then one `toolUse` block per call."""
    state = message.vendor_state or {}
    kept = state.get(REASONING_STATE_KEY)
    blocks: list[dict[str, Any]] = [
        dict(block)
        for block in (kept if isinstance(kept, list) else [])
        if isinstance(block, dict) and "reasoningContent" in block
    ]
    blocks += _blocks(message, index)
    for call in message.tool_calls or ():
        try:
            arguments = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise InvalidRequest(
                f"messages[{index}].tool_calls: the arguments of call {call.id!r} are not a "
                "JSON object, and Bedrock takes a call's input only as one"
            )
        blocks.append({"toolUse": {"toolUseId": call.id, "name": call.name, "input": arguments}})
    return blocks


def _has_tool_turns(request: Request) -> bool:
    return any(m.tool_calls or m.role is Role.TOOL for m in request.messages)


def tool_config(request: Request) -> dict[str, Any] | None:
    """`toolConfig` (tools and choice), or None to leave it out."""
    if request.parallel_tool_calls is False and request.tools:
        raise InvalidRequest(
            "parallel_tool_calls: Bedrock has no switch for one call per reply; leave it out"
        )
    choice = request.tool_choice
    if not request.tools or (choice == "none" and not _has_tool_turns(request)):
        return None
    config: dict[str, Any] = {"tools": [_tool_spec(tool) for tool in request.tools]}
    if isinstance(choice, NamedToolChoice):
        config["toolChoice"] = {"tool": {"name": choice.function.name}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif choice == "auto":
        config["toolChoice"] = {"auto": {}}
    return config


def _tool_spec(tool: Any) -> dict[str, Any]:
    function = tool.function
    spec: dict[str, Any] = {"name": function.name}
    if function.description is not None:
        spec["description"] = function.description
    schema = function.parameters or {"type": "object", "properties": {}}
    spec["inputSchema"] = {"json": schema}
    if function.strict is not None:
        spec["strict"] = function.strict
    return {"toolSpec": spec}


def output_config(request: Request) -> dict[str, Any] | None:
    """`outputConfig.textFormat` for a json_schema format (the schema as a string); else None."""
    fmt = request.response_format
    if not isinstance(fmt, JsonSchemaFormat):
        return None
    spec = fmt.json_schema
    definition: dict[str, Any] = {
        "schema": json.dumps(spec.schema_, separators=(",", ":")),
        "name": spec.name,
    }
    if spec.description is not None:
        definition["description"] = spec.description
    return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}


def reasoning_state(blocks: tuple[dict[str, Any], ...]) -> dict[str, Any] | None:
    """`vendor_state` keeping a reply's reasoning blocks; None when it has none."""
    return {REASONING_STATE_KEY: list(blocks)} if blocks else None
