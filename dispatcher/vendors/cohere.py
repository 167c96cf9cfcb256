"""Cohere v2 Chat: OpenAI-like messages, its own knob names, a `message-end` terminator.

Request: `POST {base}/v2/chat` with `Authorization: Bearer <key>`; system
messages stay in `messages`, `top_p` is sent as `p` and `stop` as
`stop_sequences`, and streaming is a body field (`stream: true`) on the same
URL. Reply: the `text` items of `message.content`; usage in `usage.tokens`
(what the model processed, comparable across vendors), else
`usage.billed_units`. Stream: SSE events whose JSON `type` names them; text
comes in `content-delta`, and `message-end` carries the finish reason and
usage and ends the stream. A failure after HTTP 200 is a `message-end` whose
finish reason is `ERROR` (or `TIMEOUT`). Errors: `{"id", "message"}`,
classified by status alone, including Cohere's own 498 (bad token) and 499
(cancelled by the client).

Tools, images and formats (the tools page, section 6): `tools` go out as
OpenAI's declarations, a `strict` one turning on the request-wide
`strict_tools`; `tool_choice` "none" and "required" are "NONE" and
"REQUIRED", "auto" is left out, and a named choice is sent as only that tool
with "REQUIRED" (the model must call it, as named). Cohere has no switch for
one call per reply, so `parallel_tool_calls: false` is refused, and no JSON
format beside tools, so that pair is refused too, both naming the field. An
assistant turn goes back with its `tool_calls` as is and the `tool_plan` kept
in its `vendor_state` ("cohere_tool_plan"); a tool message is `tool_call_id`
and content. Image parts go as OpenAI's `image_url` parts (Cohere fetches
https URLs); `response_format` is `json_object`, with `json_schema` holding a
schema; `seed` is `seed`. A reply's `message.tool_calls` (arguments are JSON
text) and `tool_plan` come back as calls and `vendor_state`; a stream's
`tool-plan-delta` and `tool-call-start` / `-delta` / `-end` events are
gathered by index into the final delta. Usage: `usage.cached_tokens` is the
cached part of the prompt.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from dispatcher.errors import DispatcherError, InvalidRequest, VendorTimeout, VendorUnavailable
from dispatcher.models import (
    FinishReason,
    JsonObjectFormat,
    JsonSchemaFormat,
    Message,
    NamedToolChoice,
    Request,
    Role,
    TextFormat,
    ToolCall,
    Usage,
)
from dispatcher.vendors.auth import request_headers
from dispatcher.vendors.base import Completion, HttpVendor, StreamDelta, StreamParser
from dispatcher.vendors.failures import error_for_status, json_or_none, retry_after_s, summary
from dispatcher.vendors.openai import parse_tool_calls
from dispatcher.vendors.tool_calls import ToolCallAssembler

__all__ = [
    "FINISH_REASONS",
    "STATE_KEY",
    "ChatStreamParser",
    "CohereVendor",
    "chat_body",
    "classify_error",
    "finish_reason",
    "parse_chat_response",
    "plan_state",
    "wire_message",
]

FINISH_REASONS: dict[str, FinishReason] = {
    "COMPLETE": FinishReason.STOP,
    "STOP_SEQUENCE": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    "TOOL_CALL": FinishReason.TOOL_CALLS,
    "ERROR": FinishReason.ERROR,
    "TIMEOUT": FinishReason.ERROR,
}

# The `vendor_state` key under which an assistant message keeps Cohere's tool plan.
STATE_KEY = "cohere_tool_plan"

# Status 499: the request was cancelled by the client; the retry layer should not
# resend on its own, so it is classified as final (InvalidRequest) like other 4xx.
CLIENT_CLOSED_REQUEST = 499


def finish_reason(raw: str | None) -> FinishReason:
    """Our finish reason for Cohere's; an absent one is a plain stop, an unknown one an error."""
    if raw is None:
        return FinishReason.STOP
    return FINISH_REASONS.get(raw, FinishReason.ERROR)


def chat_body(request: Request, model: str, *, stream: bool) -> dict[str, Any]:
    """The v2 Chat body for `request`; unset options are left out.

    Raises:
        InvalidRequest: the request asks for what Cohere has no form of (one
            call per reply, a JSON format beside tools), naming the field.
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": [wire_message(m) for m in request.messages],
    }
    body.update(_tools(request))
    fmt = request.response_format
    if fmt is not None:
        body["response_format"] = _response_format(fmt, has_tools=bool(request.tools))
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.top_p is not None:
        body["p"] = request.top_p  # Cohere's name for top_p; `k` is top-k
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.seed is not None:
        body["seed"] = request.seed
    if stream:
        body["stream"] = True
    body.update(request.extra_body)
    return body


def _tools(request: Request) -> dict[str, Any]:
    """`tools`, `strict_tools` and `tool_choice`, by Cohere's names; {} without tools."""
    if not request.tools:
        return {}
    if request.parallel_tool_calls is False:
        raise InvalidRequest(
            "parallel_tool_calls: Cohere cannot limit a reply to one tool call; leave it out "
            "(or true), or route the request to a vendor that can"
        )
    tools = list(request.tools)
    choice = request.tool_choice
    mode = None
    if isinstance(choice, NamedToolChoice):
        # No named form: only that tool, and a call required, is the same demand.
        tools = [tool for tool in tools if tool.function.name == choice.function.name]
        mode = "REQUIRED"
    elif choice in ("none", "required"):
        mode = choice.upper()
    fields: dict[str, Any] = {
        "tools": [
            {"type": "function", "function": tool.function.model_dump(exclude_none=True,
                                                                       exclude={"strict"})}
            for tool in tools
        ]
    }  # fmt: skip
    if any(tool.function.strict for tool in tools):
        fields["strict_tools"] = True
    if mode is not None:
        fields["tool_choice"] = mode
    return fields


def _response_format(
    fmt: TextFormat | JsonObjectFormat | JsonSchemaFormat, *, has_tools: bool
) -> dict[str, Any]:
    """Cohere's `response_format`: text, or json_object with an optional `json_schema`."""
    if isinstance(fmt, TextFormat):
        return {"type": "text"}
    if has_tools:
        raise InvalidRequest(
            "response_format: Cohere does not take a JSON response format together with "
            "tools; drop one of them, or route the request to a vendor that takes both"
        )
    if isinstance(fmt, JsonSchemaFormat):
        return {"type": "json_object", "json_schema": fmt.json_schema.schema_}
    return {"type": "json_object"}


def wire_message(message: Message) -> dict[str, Any]:
    """One message as v2 Chat takes it; an assistant turn gets its kept `tool_plan` back."""
    content = message.content
    if type(content) is str and message.tool_calls is None and message.tool_call_id is None:
        return {"role": message.role.value, "content": content}
    wire: dict[str, Any] = {"role": message.role.value}
    if isinstance(content, list):
        wire["content"] = [part.model_dump(exclude_none=True) for part in content]
    elif content is not None:
        wire["content"] = content
    if message.role is Role.ASSISTANT and message.tool_calls:
        plan = (message.vendor_state or {}).get(STATE_KEY)
        if isinstance(plan, str) and plan:
            wire["tool_plan"] = plan
        wire["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    if message.tool_call_id is not None:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def _count(tokens: Any, billed: Any, name: str) -> int:
    """One count from `tokens`, else from `billed_units`; the schema types them as floats."""
    for source in (tokens, billed):
        if isinstance(source, dict) and source.get(name) is not None:
            return int(source[name])
    return 0


def parse_usage(data: Any) -> Usage:
    """Usage from a Cohere `usage` object: model-side `tokens`, else `billed_units`;
    `cached_tokens` (beside them) is the cached part of the prompt."""
    if not isinstance(data, dict):
        return Usage()
    tokens, billed = data.get("tokens"), data.get("billed_units")
    prompt = _count(tokens, billed, "input_tokens")
    cached = data.get("cached_tokens")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=_count(tokens, billed, "output_tokens"),
        cached_prompt_tokens=min(prompt, int(cached)) if isinstance(cached, int | float) else 0,
    )


def plan_state(tool_plan: str | None) -> dict[str, Any] | None:
    """`vendor_state` keeping a reply's tool plan; None when it has none."""
    return {STATE_KEY: tool_plan} if tool_plan else None


def tool_turn(raw: str | None, calls: tuple[ToolCall, ...]) -> FinishReason:
    """Our finish reason; a reply holding calls is a tool turn whatever it says."""
    reason = finish_reason(raw)
    return FinishReason.TOOL_CALLS if calls and reason is FinishReason.STOP else reason


def parse_chat_response(body: Any, vendor: str = "cohere") -> Completion:
    """A non-streamed v2 Chat body; its `tool_plan` is kept as the vendor state."""
    if not isinstance(body, dict):
        body = {}
    message = body.get("message")
    message = message if isinstance(message, dict) else {}
    content = message.get("content")
    text = "".join(
        str(item.get("text") or "")
        for item in content or []
        if isinstance(item, dict) and item.get("type") == "text"
    )
    raw = body.get("finish_reason")
    calls = parse_tool_calls(message.get("tool_calls"), vendor)
    return Completion(
        text=text,
        finish_reason=tool_turn(raw, calls),
        usage=parse_usage(body.get("usage")),
        vendor_finish_reason=raw,
        tool_calls=calls,
        vendor_state=plan_state(str(message.get("tool_plan") or "")),
    )


class ChatStreamParser(StreamParser):
    """v2 Chat stream events, dispatched on their `type`, until `message-end`.

    Text comes in `content-delta`; `tool-plan-delta` pieces are joined into the
    tool plan; `tool-call-start` (id, name) and `tool-call-delta` (argument
    text) are gathered by their `index` (`delta.message.tool_calls` is one
    object there, not a list). Citation and debug events are skipped, and so
    is the `data: [DONE]` the SDK tolerates at the end.
    """

    def __init__(self, vendor: str) -> None:
        super().__init__(vendor)
        self.done = False
        self.raw_finish: str | None = None
        self.usage: Usage | None = None
        self.tool_calls = ToolCallAssembler(vendor)
        self.tool_plan: list[str] = []

    def feed(self, item: ServerSentEvent) -> list[StreamDelta]:
        if item.data.strip() == "[DONE]":
            return []
        event = json_or_none(item.data)
        if not isinstance(event, dict):
            return []
        kind = event.get("type") or item.event
        delta = event.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        if kind == "content-delta":
            message = delta.get("message")
            content = message.get("content") if isinstance(message, dict) else None
            return self.text(str(content.get("text") or "") if isinstance(content, dict) else "")
        message = delta.get("message")
        message = message if isinstance(message, dict) else {}
        if kind == "tool-plan-delta":
            if message.get("tool_plan"):
                self.tool_plan.append(str(message["tool_plan"]))
        elif kind in ("tool-call-start", "tool-call-delta"):
            call = message.get("tool_calls")
            call = call if isinstance(call, dict) else {}
            function = call.get("function")
            function = function if isinstance(function, dict) else {}
            self.tool_calls.add(
                event.get("index", 0),
                call_id=call.get("id"),
                name=function.get("name"),
                arguments=function.get("arguments"),
            )
        elif kind == "message-end":
            self._end(delta)
        return []

    def _end(self, delta: dict[str, Any]) -> None:
        raw = delta.get("finish_reason")
        partial = " after part of the reply was sent" if self.text_seen else ""
        if raw == "ERROR":
            raise VendorUnavailable(
                f"{self.vendor} failed while generating{partial}: "
                f"{delta.get('error') or '(no message)'}",
                vendor=self.vendor,
            )
        if raw == "TIMEOUT":
            raise VendorTimeout(
                f"{self.vendor} ran out of time while generating{partial}", vendor=self.vendor
            )
        self.done = True
        self.raw_finish = str(raw) if raw is not None else None
        if isinstance(delta.get("usage"), dict):
            self.usage = parse_usage(delta["usage"])

    def finish(self) -> StreamDelta:
        if not self.done:
            raise self.broken("message-end")
        calls = self.tool_calls.calls()
        return StreamDelta(
            finish_reason=tool_turn(self.raw_finish, calls),
            usage=self.usage,
            vendor_finish_reason=self.raw_finish,
            tool_calls=calls,
            vendor_state=plan_state("".join(self.tool_plan)),
        )


def classify_error(status: int, headers: httpx.Headers, body: str, vendor: str) -> DispatcherError:
    """Cohere's `{"id", "message"}` bodies, classified by status (498 auth, 499 final)."""
    data = json_or_none(body)
    message = data.get("message") if isinstance(data, dict) else None
    text = str(message) if message else summary(body)
    if status == CLIENT_CLOSED_REQUEST:
        text += " (the request was cancelled by the client; resend it if it is still wanted)"
    return error_for_status(status, text, vendor=vendor, retry_after=retry_after_s(headers))


class CohereVendor(HttpVendor):
    """api.cohere.com, or any base URL given in the configuration."""

    @property
    def base_url(self) -> str:
        """The configured base URL, without a trailing slash."""
        return (self.config.endpoint or "").rstrip("/")

    def auth(self) -> dict[str, str]:
        """The Bearer header; Cohere's scheme is fixed, whatever `auth:` says."""
        if self.config.api_key is None:
            return {}
        return {"Authorization": f"Bearer {self.config.api_key.get_secret_value()}"}

    def build_request(self, request: Request, model: str, *, stream: bool) -> httpx.Request:
        try:
            body = chat_body(request, model, stream=stream)
        except InvalidRequest as exc:
            exc.vendor = self.name
            raise
        return httpx.Request(
            "POST",
            f"{self.base_url}/v2/chat",
            headers=request_headers(self.config, self.auth()),
            content=json.dumps(body).encode(),
        )

    def parse_response(self, body: Any) -> Completion:
        return parse_chat_response(body, self.name)

    def stream_parser(self) -> StreamParser:
        return ChatStreamParser(self.name)

    def classify_error(self, status: int, headers: httpx.Headers, body: str) -> DispatcherError:
        return classify_error(status, headers, body, self.name)

    def health_request(self) -> httpx.Request:
        return httpx.Request(
            "GET", f"{self.base_url}/v1/models", headers=request_headers(self.config, self.auth())
        )
