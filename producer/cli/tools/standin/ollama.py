"""The Ollama chat wire format, server side (`POST /api/chat`).

Per the wire-format notes' section 5: Ollama streams unless told `"stream": false`,
as NDJSON lines ending in one with `"done": true` and the counts; options carry
`num_predict` and `stop`; errors are `{"error": "..."}` and carry no wait hint.

Tools, images and formats (the tools page, section 5): `tools` are OpenAI-shaped
declarations and there is no tool choice; `content` is a string, `images` bare
base64 (a URL or a data URL is not base64: 400), and a call sent back holds its
arguments as a JSON object (a string is a 400, as Go's decoder says); `format`
is "json" or a JSON schema. The answers follow `chat_rules`: a call is a
`message.tool_calls` entry (`id`, `function.index`, `arguments` an object) with
empty content and `done_reason` "stop"; streamed, it comes whole on one
`done: false` line before the final one.
"""

from __future__ import annotations

import base64
import binascii
import json
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
    as_list,
    dumps,
    text_of,
)

__all__ = ["OllamaFormat"]

_CREATED_AT = "2026-11-01T10:00:00Z"


def _refuse(message: str) -> Refused:
    return Refused(web.json_response({"error": message}, status=400))


def _check_message(message: Any, index: int) -> int:
    """A message checked as the server's decoder checks it; its number of images."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise _refuse(f"messages[{index}]: a message needs a role")
    if not isinstance(message.get("content", ""), str):
        raise _refuse(
            "json: cannot unmarshal array into Go struct field ChatRequest.messages.content "
            "of type string"
        )
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("arguments", {}), dict):
            raise _refuse(
                "json: cannot unmarshal string into Go struct field "
                "ToolCallFunction.messages.tool_calls.function.arguments of type "
                "api.ToolCallFunctionArguments"
            )
    images = message.get("images") or []
    for image in images:
        try:
            base64.b64decode(str(image), validate=True)
        except (binascii.Error, ValueError):
            raise _refuse("illegal base64 data at input byte 4") from None
    return len(images)


def _declared_tools(body: Json) -> tuple[tuple[str, Json], ...]:
    declared = []
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _refuse("invalid tool: a function with a name is required")
        declared.append((function["name"], function.get("parameters") or {}))
    return tuple(declared)


def _chat_ask(body: Json, pairs: list[tuple[str, str]], images: list[int]) -> ChatAsk:
    """What of the body shapes the answer (`chat_rules`); there is no tool choice."""
    fmt = body.get("format")
    if fmt is not None and fmt not in ("", "json") and not isinstance(fmt, dict):
        raise _refuse(f"invalid format: {json.dumps(fmt)}")
    last_role, last_text = pairs[-1] if pairs else ("user", "")
    return ChatAsk(
        tools=_declared_tools(body),
        last_role=last_role,
        last_text=last_text,
        prompt=next((text for role, text in reversed(pairs) if role == "user"), ""),
        images=images[-1] if images and last_role == "user" else 0,
        json_schema=fmt if isinstance(fmt, dict) else None,
        json_object=fmt == "json",
    )


def _tool_calls(reply: Reply) -> list[Json]:
    call = reply.tool_call
    if call is None:
        return []
    function = {"index": 0, "name": call.name, "arguments": json.loads(call.arguments)}
    return [{"id": call.id, "function": function}]


class OllamaFormat(WireFormat):
    """Ollama's native chat API."""

    vendor = "ollama"

    def error(self, status: int, message: str, *, retry_after_s: float) -> web.Response:
        return web.json_response({"error": message}, status=status)

    def injected(self, fault: Fault, retry_after_s: float) -> web.Response:
        status = 429 if fault.quota else (fault.status or 500)
        messages = {
            401: "unauthorized",
            429: "too many requests",
            500: "model runner has unexpectedly stopped",
            503: "server busy, maximum pending requests exceeded",
        }
        message = f"{messages.get(status, f'HTTP {status}')} {INJECTED}"
        return self.error(status, message, retry_after_s=retry_after_s)

    def parse(self, request: web.Request, body: Json) -> Call:
        options = body.get("options") or {}
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            raise _refuse("messages must be an array")
        images = [_check_message(message, index) for index, message in enumerate(messages)]
        pairs = [(m["role"], text_of(m.get("content"))) for m in messages]
        return Call(
            model=body.get("model") or "llama",
            messages=pairs,
            stream=body.get("stream", True) is not False,  # Ollama streams unless told otherwise
            max_tokens=options.get("num_predict"),
            stop=as_list(options.get("stop")),
            ask=_chat_ask(body, pairs, images),
        )

    @staticmethod
    def _done(reply: Reply) -> Json:
        return {
            "done": True,
            "done_reason": "length" if reply.truncated else "stop",
            "prompt_eval_count": reply.prompt_tokens,
            "eval_count": reply.completion_tokens,
            "total_duration": 1000,
            "eval_duration": 500,
        }

    def whole(self, call: Call, reply: Reply, request_id: str) -> Json:
        return {
            "model": call.model,
            "created_at": _CREATED_AT,
            "message": {
                "role": "assistant",
                "content": reply.text,
                **({"tool_calls": _tool_calls(reply)} if reply.tool_call else {}),
            },
            **self._done(reply),
        }

    def stream(self, call: Call, reply: Reply, request_id: str) -> Stream:
        def line(text: str, **fields: object) -> bytes:
            message = {"role": "assistant", "content": text}
            return dumps({"model": call.model, "message": message, **fields}) + b"\n"

        events = [line(text, done=False) for text in reply.chunks]
        if reply.tool_call is not None:
            # A call comes whole, on its own line, once the server has parsed it.
            message = {"role": "assistant", "content": "", "tool_calls": _tool_calls(reply)}
            events = [dumps({"model": call.model, "message": message, "done": False}) + b"\n"]
        return Stream(
            opening=b"",
            events=events,
            closing=line("", **self._done(reply)),
            error=b'{"error":"model runner crashed"}\n',
            content_type="application/x-ndjson",
        )
