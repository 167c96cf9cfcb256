"""The Cohere v2 chat wire format, server side (`POST /v2/chat`).

Per the wire-format notes' section 6: replies carry `finish_reason`
(COMPLETE, MAX_TOKENS, STOP_SEQUENCE) and usage in two views (`tokens`,
`billed_units`); streams are named SSE events from `message-start` to
`message-end`, and an in-stream failure is a `message-end` with `finish_reason:
ERROR`; errors are `{"id", "message"}`, a 429 carries `retry-after`.

Tools, images and formats (the tools page, section 6): `tools` are OpenAI-shaped
declarations, `tool_choice` is "REQUIRED" or "NONE" (upper case; anything else
is a 400), a call sent back holds its arguments as a JSON string, a tool
message needs its `tool_call_id`, `image_url` parts (data or http(s) URLs) go
in user messages, and `response_format` is text or json_object (with an
optional `json_schema`), refused beside `tools`. The answers follow
`chat_rules`, a call's id being "<tool name>_" + 8 hex digits of the rules'
id: a reply with `finish_reason` TOOL_CALL, the `message.tool_plan` "I will
call <tool name>." and `message.tool_calls`; streamed, `tool-plan-delta`
events, then `tool-call-start` (id, name, empty arguments), the arguments in
`tool-call-delta` fragments and `tool-call-end`, all with index 0. Usage
carries `cached_tokens: 0`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from producer.cli.tools.standin.chat_rules import ChatAsk, PlannedCall
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
    ending,
    text_of,
)

__all__ = ["CohereFormat"]


def _event(name: str, data: Json) -> bytes:
    return f"event: {name}\ndata: ".encode() + dumps({"type": name, **data}) + b"\n\n"


def _refuse(message: str) -> Refused:
    return Refused(web.json_response({"id": "err_400", "message": message}, status=400))


def _check_message(message: Any, index: int) -> int:
    """A message checked as the API checks it; its number of image parts."""
    if not isinstance(message, dict) or message.get("role") not in (
        "system", "user", "assistant", "tool"
    ):  # fmt: skip
        raise _refuse(f"invalid request: messages[{index}] needs a role")
    role = message["role"]
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise _refuse(f"invalid request: messages[{index}].tool_call_id is required")
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
            raise _refuse(
                f"invalid request: messages[{index}].tool_calls: function.arguments must be "
                "a string"
            )
    content = message.get("content")
    if not isinstance(content, list):
        return 0
    images = 0
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("text", "image_url", "document"):
            raise _refuse(f"invalid request: messages[{index}].content: unknown type {kind!r}")
        if kind != "image_url":
            continue
        url = (part.get("image_url") or {}).get("url")
        if role != "user" or not isinstance(url, str) or not url.startswith(
            ("data:image/", "https://", "http://")
        ):  # fmt: skip
            raise _refuse(f"invalid request: messages[{index}]: invalid image_url")
        images += 1
    return images


def _declared_tools(body: Json) -> tuple[tuple[str, Json], ...]:
    declared = []
    for index, tool in enumerate(body.get("tools") or ()):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
        ):
            raise _refuse(f"invalid request: tools[{index}] must be a function with a name")
        declared.append((function["name"], function.get("parameters") or {}))
    return tuple(declared)


def _chat_ask(body: Json, pairs: list[tuple[str, str]], images: list[int]) -> ChatAsk:
    """What of the body shapes the answer (`chat_rules`), checked as the API checks it."""
    declared = _declared_tools(body)
    choice = body.get("tool_choice")
    if choice is not None and choice not in ("REQUIRED", "NONE"):
        raise _refuse(
            f"invalid request: tool_choice must be one of REQUIRED, NONE; received {choice!r}"
        )
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is not None and kind not in ("text", "json_object"):
        raise _refuse("invalid request: response_format.type must be text or json_object")
    if kind == "json_object" and declared:
        raise _refuse("invalid request: response_format is not supported with tools or documents")
    schema = fmt.get("json_schema") if isinstance(fmt, dict) and kind == "json_object" else None
    last_role, last_text = pairs[-1] if pairs else ("user", "")
    return ChatAsk(
        tools=declared,
        tool_choice={"REQUIRED": "required", "NONE": "none"}.get(str(choice)),
        last_role=last_role,
        last_text=last_text,
        prompt=next((text for role, text in reversed(pairs) if role == "user"), ""),
        images=images[-1] if images and last_role == "user" else 0,
        json_schema=schema if isinstance(schema, dict) else None,
        json_object=kind == "json_object" and not isinstance(schema, dict),
    )


def _call_id(call: PlannedCall) -> str:
    """Cohere's shape of id: the tool's name, then 8 characters."""
    return f"{call.name}_{call.id.removeprefix('call_')[:8]}"


def _tool_plan(call: PlannedCall) -> str:
    return f"I will call {call.name}."


class CohereFormat(WireFormat):
    """Cohere's v2 chat API."""

    vendor = "cohere"

    def error(self, status: int, message: str, *, retry_after_s: float) -> web.Response:
        headers = {"retry-after": f"{retry_after_s:g}"} if status == 429 else {}
        return web.json_response(
            {"id": "err_1", "message": message}, status=status, headers=headers
        )

    def injected(self, fault: Fault, retry_after_s: float) -> web.Response:
        status = 402 if fault.quota else (fault.status or 500)
        messages = {
            401: "invalid api token",
            402: "you have exceeded your quota",
            429: "trial key rate limit",
            500: "internal server error",
            503: "service unavailable",
        }
        message = f"{messages.get(status, f'HTTP {status}')} {INJECTED}"
        return self.error(status, message, retry_after_s=retry_after_s)

    def parse(self, request: web.Request, body: Json) -> Call:
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            raise _refuse("invalid request: messages must be an array")
        images = [_check_message(message, index) for index, message in enumerate(messages)]
        pairs = [(m["role"], text_of(m.get("content"), separator="")) for m in messages]
        return Call(
            model=body.get("model") or "command",
            messages=pairs,
            stream=bool(body.get("stream")),
            max_tokens=body.get("max_tokens"),
            stop=as_list(body.get("stop_sequences")),
            ask=_chat_ask(body, pairs, images),
        )

    @staticmethod
    def _finish(reply: Reply) -> str:
        return ending(reply, tool="TOOL_CALL", length="MAX_TOKENS", stop="STOP_SEQUENCE",
                      end="COMPLETE")  # fmt: skip

    @staticmethod
    def _usage(reply: Reply) -> Json:
        counts = {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens}
        return {"billed_units": counts, "tokens": counts, "cached_tokens": 0}

    def whole(self, call: Call, reply: Reply, request_id: str) -> Json:
        message: Json = {"role": "assistant", "content": [{"type": "text", "text": reply.text}]}
        planned = reply.tool_call
        if planned is not None:
            function = {"name": planned.name, "arguments": planned.arguments}
            message = {
                "role": "assistant",
                "tool_plan": _tool_plan(planned),
                "tool_calls": [{"id": _call_id(planned), "type": "function", "function": function}],
            }
        return {
            "id": request_id,
            "finish_reason": self._finish(reply),
            "message": message,
            "usage": self._usage(reply),
        }

    def stream(self, call: Call, reply: Reply, request_id: str) -> Stream:
        start = {"message": {"role": "assistant", "content": []}}
        opening = _event("message-start", {"id": request_id, "delta": start}) + _event(
            "content-start",
            {"index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}},
        )
        events = [
            _event("content-delta", {"index": 0, "delta": {"message": {"content": {"text": text}}}})
            for text in reply.chunks
        ]
        end = {"finish_reason": self._finish(reply), "usage": self._usage(reply)}
        closing = _event("content-end", {"index": 0}) + _event("message-end", {"delta": end})
        if reply.tool_call is not None:
            opening, events, closing = self._tool_stream(reply.tool_call, request_id, end)
        failed = {"finish_reason": "ERROR", "error": "internal failure"}
        return Stream(
            opening=opening,
            events=events,
            closing=closing,
            error=_event("message-end", {"delta": failed}),
        )

    @staticmethod
    def _tool_stream(
        planned: PlannedCall, request_id: str, end: Json
    ) -> tuple[bytes, list[bytes], bytes]:
        """The plan in two pieces, then the call: start, argument fragments, end."""
        start = {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": []}}
        plan = _tool_plan(planned)
        half = len(plan) // 2
        opening = _event("message-start", {"id": request_id, "delta": start})
        call = {
            "id": _call_id(planned),
            "type": "function",
            "function": {"name": planned.name, "arguments": ""},
        }
        events = [
            _event("tool-plan-delta", {"delta": {"message": {"tool_plan": piece}}})
            for piece in (plan[:half], plan[half:])
        ]
        events.append(
            _event("tool-call-start", {"index": 0, "delta": {"message": {"tool_calls": call}}})
        )
        size = max(1, -(-len(planned.arguments) // 3))
        for offset in range(0, len(planned.arguments), size):
            piece = {"function": {"arguments": planned.arguments[offset : offset + size]}}
            events.append(
                _event("tool-call-delta", {"index": 0, "delta": {"message": {"tool_calls": piece}}})
            )
        closing = _event("tool-call-end", {"index": 0}) + _event("message-end", {"delta": end})
        return opening, events, closing
