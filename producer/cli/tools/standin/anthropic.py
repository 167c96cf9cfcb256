"""The Anthropic Messages wire format, server side (`POST /v1/messages`).

Per the wire-format notes' section 3: `anthropic-version` and `max_tokens` are
required, `system` is a top-level field (a `system` role in `messages` is a 400),
and under `anthropic-version: 2026-10-21` any sampling parameter is a 400.
Streams are named SSE events (`message_start` ... `message_stop`, usage
cumulative in `message_delta`); errors are `{"type": "error", "error": {...}}`,
and overload is a 529.

Tools, images, structured output and thinking (the tools page, section 3) are
read and checked as the real API does: flat `tools` with an object
`input_schema`; `tool_choice` `auto`/`any`/`tool`/`none` (a `tool` one names
a declared tool; a forcing one is a 400 with thinking on); `tool_use` inputs
are objects, every `tool_use` is answered by a `tool_result` in the next user
message, results come before any other block there and answer a call of the
message before; `image` blocks are base64 (a media type and bare base64) or
url sources; `output_config.format` is a json_schema (never together with the
older `output_format`). The answers follow `chat_rules`: a call is a
`tool_use` block (`toolu_` id, `input` an object) with stop reason
`tool_use`; streamed, its block opens with `input: {}` and the input comes as
`input_json_delta` fragments, an empty one first. A json_schema gets its JSON
as the text block. There is no JSON-object mode: a system prompt asking for
JSON gets `{"echo": <prompt>}`, as a model told so answers. With `thinking`
enabled a reply opens with a signed `thinking` block (streamed as
`thinking_delta` and `signature_delta`) that a tool turn must send back first
and unchanged, or it is a 400.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from producer.cli.tools.standin.chat_rules import ChatAsk
from producer.cli.tools.standin.faults import Fault
from producer.cli.tools.standin.replies import (
    INJECTED,
    Call,
    Json,
    Refused,
    Reply,
    Stream,
    WireFormat,
    argument_pieces,
    as_list,
    dumps,
    ending,
    text_of,
)

__all__ = ["AnthropicFormat"]

# The version under which sampling parameters are refused.
STRICT_VERSION = "2026-10-21"
_SAMPLING = frozenset({"temperature", "top_p", "top_k"})
_KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_THINKING = frozenset({"thinking", "redacted_thinking"})


def _event(name: str, data: Json) -> bytes:
    return f"event: {name}\ndata: ".encode() + dumps({"type": name, **data}) + b"\n\n"


class _Bad(Exception):
    """A request the API would refuse, with its message."""


@dataclass(frozen=True)
class _MessagesCall(Call):
    """A call with what only Anthropic has: whether thinking is on."""

    thinking: bool = False


def _signature(thinking: str) -> str:
    """The stand-in's signature of a thinking text: what proves it came back unchanged."""
    return "sig_" + hashlib.sha256(thinking.encode()).hexdigest()[:24]


def _thinking_text(prompt: str) -> str:
    return f"The user asks: {prompt}"


def _tool_id(planned_id: str) -> str:
    """Anthropic's `toolu_` id for the stand-in's planned call."""
    return "toolu_" + planned_id.removeprefix("call_")


def _declared(body: Json) -> tuple[tuple[str, Json], ...]:
    tools = body.get("tools")
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise _Bad("tools: Input should be a valid list")
    declared = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _Bad(f"tools.{index}.name: Field required")
        if "function" in tool:
            raise _Bad(f"tools.{index}.function: Extra inputs are not permitted")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _Bad(f"tools.{index}.custom.input_schema: Field required")
        if schema.get("type") != "object":
            raise _Bad(f"tools.{index}.custom.input_schema.type: Input should be 'object'")
        declared.append((tool["name"], schema))
    return tuple(declared)


def _choice(body: Json, declared: tuple[tuple[str, Json], ...], thinking: bool) -> str | None:
    choice = body.get("tool_choice")
    if choice is None:
        return None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        raise _Bad("tool_choice: Input tag does not match any of 'auto', 'any', 'tool', 'none'")
    if thinking and kind in ("any", "tool"):
        raise _Bad("Thinking may not be enabled when tool_choice forces tool use.")
    if kind == "tool":
        name = choice.get("name")
        if name not in dict(declared):
            raise _Bad(f"tool_choice.name: tool {name!r} not found in tools")
        return str(name)
    return {"auto": "auto", "any": "required", "none": "none"}[str(kind)]


def _format(body: Json) -> Json | None:
    """The json_schema of `output_config.format`, or None."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt is None:
        return None
    if "output_format" in body:
        raise _Bad("output_format and output_config.format may not both be set")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise _Bad("output_config.format.type: Input should be 'json_schema'")
    if not isinstance(fmt.get("schema"), dict):
        raise _Bad("output_config.format.schema: Field required")
    return dict(fmt["schema"])


def _check_image(block: Json, where: str) -> None:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "url" and isinstance(source, dict):
        if not str(source.get("url", "")).startswith(("https://", "http://")):
            raise _Bad(f"{where}.source.url: Only HTTP(S) URLs are supported")
        return
    if kind != "base64" or not isinstance(source, dict):
        raise _Bad(f"{where}.source: Input tag does not match any of 'base64', 'url', 'file'")
    if source.get("media_type") not in _MEDIA_TYPES:
        raise _Bad(
            f"{where}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
            "'image/gif' or 'image/webp'"
        )
    try:
        base64.b64decode(str(source.get("data", "")), validate=True)
    except (binascii.Error, ValueError):
        raise _Bad(f"{where}.source.base64.data: The image data is not valid base64") from None


def _blocks(message: Json, index: int, thinking: bool) -> list[Json]:
    """A message's content as blocks, each checked for its role."""
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise _Bad(f"messages.{index}.content: a string or a non-empty list of blocks")
    role = message.get("role")
    allowed = {
        "user": {"text", "image", "tool_result"},
        "assistant": {"text", "tool_use", *_THINKING},
    }
    for number, block in enumerate(content):
        where = f"messages.{index}.content.{number}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in allowed.get(str(role), set()):
            raise _Bad(f"{where}: a {kind!r} block may not be in a {role} message")
        if kind == "image":
            _check_image(block, where)
        elif kind == "tool_use" and not isinstance(block.get("input"), dict):
            raise _Bad(f"{where}.tool_use.input: Input should be a valid dictionary")
        elif kind == "thinking" and block.get("signature") != _signature(
            str(block.get("thinking"))
        ):
            raise _Bad(f"{where}: Invalid `signature` in `thinking` block")
    calls = role == "assistant" and any(b.get("type") == "tool_use" for b in content)
    if thinking and calls and content[0].get("type") not in _THINKING:
        raise _Bad(
            f"messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, "
            f"but found `{content[0].get('type')}`. When `thinking` is enabled, an "
            "assistant message with tool use must start with its thinking block"
        )
    return list(content)


def _check_pairs(conversation: list[tuple[str, list[Json]]]) -> None:
    """Each `tool_use` answered in the next user message, results first, none unasked."""
    asked: list[str] = []
    seen: set[str] = set()
    for index, (role, blocks) in enumerate(conversation):
        results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
        kinds = [b.get("type") for b in blocks]
        if results and kinds[: len(results)] != ["tool_result"] * len(results):
            raise _Bad(
                f"messages.{index}: `tool_result` blocks must come first in a user message, "
                "before any other content"
            )
        for number, result in enumerate(results):
            if result not in asked:
                raise _Bad(
                    f"messages.{index}.content.{number}: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {result}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
        missing = [call for call in asked if call not in results]
        if missing:
            raise _Bad(
                f"messages.{index - 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
        asked = [
            str(b.get("id")) for b in blocks if role == "assistant" and b.get("type") == "tool_use"
        ]
        if seen & set(asked) or len(set(asked)) != len(asked):
            raise _Bad("messages: `tool_use` ids must be unique")
        seen |= set(asked)
    if asked:
        raise _Bad(
            f"messages.{len(conversation) - 1}: `tool_use` ids were found without `tool_result` "
            f"blocks immediately after: {', '.join(asked)}. Each `tool_use` block must have a "
            "corresponding `tool_result` block in the next message."
        )


def _result_text(block: Json) -> str:
    return text_of(block.get("content"))


def _chat_ask(body: Json, messages: list[Any], system_text: str) -> tuple[ChatAsk, bool]:
    """What of the body shapes the answer (`chat_rules`), and whether thinking is on."""
    thinking_config = body.get("thinking")
    thinking = isinstance(thinking_config, dict) and thinking_config.get("type") in (
        "enabled",
        "adaptive",
    )
    declared = _declared(body)
    choice = _choice(body, declared, thinking)
    conversation = [
        (str(m.get("role")), _blocks(m, index, thinking)) for index, m in enumerate(messages)
    ]
    _check_pairs(conversation)
    role, blocks = conversation[-1] if conversation else ("user", [])
    results = [b for b in blocks if b.get("type") == "tool_result"]
    last_role = "tool" if results else role
    # The prompt: the text of the last user message that is no tool result.
    prompt = next(
        (
            text_of(bs)
            for r, bs in reversed(conversation)
            if r == "user" and not any(b.get("type") == "tool_result" for b in bs)
        ),
        "",
    )
    schema = _format(body)
    return (
        ChatAsk(
            tools=declared,
            tool_choice=choice,
            last_role=last_role,
            last_text=_result_text(results[-1]) if results else text_of(blocks),
            prompt=prompt,
            images=sum(1 for b in blocks if b.get("type") == "image") if role == "user" else 0,
            json_schema=schema,
            json_object=schema is None and "json" in system_text.lower(),
        ),
        thinking,
    )


class AnthropicFormat(WireFormat):
    """Anthropic's Messages API."""

    vendor = "anthropic"
    request_id_header = "request-id"

    def error(self, status: int, message: str, *, retry_after_s: float) -> web.Response:
        kind = _KINDS.get(status) or (
            "overloaded_error" if status >= 500 else "invalid_request_error"
        )
        headers = {"retry-after": f"{retry_after_s:g}"} if status == 429 else {}
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_x"}
        return web.json_response(body, status=status, headers=headers)

    def injected(self, fault: Fault, retry_after_s: float) -> web.Response:
        if fault.quota:
            message = f"Your credit balance is too low to access the Anthropic API. {INJECTED}"
            return self.error(402, message, retry_after_s=retry_after_s)
        status = fault.status or 500
        messages = {
            401: "invalid x-api-key",
            429: "Number of requests has exceeded your rate limit",
            500: "Internal server error",
            503: "Overloaded",
            529: "Overloaded",
        }
        # Anthropic says "overloaded" with a 529, never a 503.
        shown = 529 if status == 503 else status
        message = f"{messages.get(status, f'HTTP {status}')} {INJECTED}"
        return self.error(shown, message, retry_after_s=retry_after_s)

    def _refuse(self, message: str) -> Refused:
        return Refused(self.error(400, message, retry_after_s=0))

    def parse(self, request: web.Request, body: Json) -> Call:
        version = request.headers.get("anthropic-version")
        if not version:
            raise self._refuse("anthropic-version header is required")
        if not isinstance(body.get("max_tokens"), int):
            raise self._refuse("max_tokens: Field required")
        messages = body.get("messages") or []
        if any(m.get("role") == "system" for m in messages):
            raise self._refuse('messages: Unexpected role "system"')
        if version == STRICT_VERSION and _SAMPLING & set(body):
            raise self._refuse("temperature: Extra inputs are not permitted")
        system = body.get("system")
        system_text = text_of(system) if system else ""
        try:
            ask, thinking = _chat_ask(body, messages, system_text)
        except _Bad as bad:
            raise self._refuse(str(bad)) from None
        return _MessagesCall(
            model=body.get("model") or "claude",
            messages=([("system", system_text)] if system_text else [])
            + [(m["role"], _text(m.get("content"))) for m in messages],
            stream=bool(body.get("stream")),
            max_tokens=body["max_tokens"],
            stop=as_list(body.get("stop_sequences")),
            ask=ask,
            thinking=thinking,
        )

    @staticmethod
    def _reason(reply: Reply) -> str:
        return ending(reply, tool="tool_use", length="max_tokens", stop="stop_sequence",
                      end="end_turn")  # fmt: skip

    def whole(self, call: Call, reply: Reply, request_id: str) -> Json:
        return {
            "id": f"msg_{request_id}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [*_thinking_blocks(call), _main_block(reply)],
            "stop_reason": self._reason(reply),
            "stop_sequence": None,
            "usage": {
                "input_tokens": reply.prompt_tokens,
                "output_tokens": reply.completion_tokens,
            },
        }

    def stream(self, call: Call, reply: Reply, request_id: str) -> Stream:
        message: Json = {
            "id": f"msg_{request_id}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": 1},
        }
        # Thinking first (whole, in the opening), then the text or the call, in pieces.
        opening = _event("message_start", {"message": message})
        index = 0
        for block in _thinking_blocks(call):
            opening += _thinking_events(index, block)
            index += 1
        planned = reply.tool_call
        if planned is None:
            start: Json = {"type": "text", "text": ""}
            pieces = [{"type": "text_delta", "text": text} for text in reply.chunks]
        else:
            start = {
                "type": "tool_use",
                "id": _tool_id(planned.id),
                "name": planned.name,
                "input": {},
            }
            pieces = [
                {"type": "input_json_delta", "partial_json": fragment}
                for fragment in ["", *argument_pieces(planned.arguments)]
            ]
        opening += _event("content_block_start", {"index": index, "content_block": start})
        opening += _event("ping", {})
        events = [
            _event("content_block_delta", {"index": index, "delta": delta}) for delta in pieces
        ]
        closing = (
            _event("content_block_stop", {"index": index})
            + _event(
                "message_delta",
                {
                    "delta": {"stop_reason": self._reason(reply), "stop_sequence": None},
                    "usage": {"output_tokens": reply.completion_tokens},
                },
            )
            + _event("message_stop", {})
        )
        error = _event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
        return Stream(opening=opening, events=events, closing=closing, error=error)


def _text(content: Any) -> str:
    """A message's text for the token count: its text blocks and tool results."""
    if not isinstance(content, list):
        return text_of(content)
    return "\n".join(
        _result_text(block) if block.get("type") == "tool_result" else text_of([block])
        for block in content
        if isinstance(block, dict)
    )


def _thinking_blocks(call: Call) -> list[Json]:
    """The signed thinking block a call with thinking on opens its reply with."""
    if not isinstance(call, _MessagesCall) or not call.thinking:
        return []
    text = _thinking_text(call.ask.prompt)
    return [{"type": "thinking", "thinking": text, "signature": _signature(text)}]


def _thinking_events(index: int, block: Json) -> bytes:
    start = {"index": index, "content_block": {"type": "thinking", "thinking": ""}}
    text = {"type": "thinking_delta", "thinking": block["thinking"]}
    signature = {"type": "signature_delta", "signature": block["signature"]}
    return (
        _event("content_block_start", start)
        + _event("content_block_delta", {"index": index, "delta": text})
        + _event("content_block_delta", {"index": index, "delta": signature})
        + _event("content_block_stop", {"index": index})
    )


def _main_block(reply: Reply) -> Json:
    """The reply's text block, or its `tool_use` block."""
    planned = reply.tool_call
    if planned is None:
        return {"type": "text", "text": reply.text}
    return {
        "type": "tool_use",
        "id": _tool_id(planned.id),
        "name": planned.name,
        "input": json.loads(planned.arguments),
    }
