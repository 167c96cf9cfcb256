"""OpenAI Chat Completions: the wire format that OpenAI-compatible servers speak too.

Request: `POST {base}/chat/completions` with `Authorization: Bearer <key>`;
`max_tokens` goes out as `max_completion_tokens` (the old name is refused by
reasoning models); a stream asks for `stream_options.include_usage`, without
which usage never arrives. Reply: `choices[0].message.content`, usage in
`usage.prompt_tokens` / `usage.completion_tokens`. Stream: SSE `data:` lines
ending with `data: [DONE]`; the usage chunk has empty `choices`, and a
`data: {"error": ...}` chunk is a failure after HTTP 200. Azure OpenAI and the
generic OpenAI-compatible vendor reuse everything here but the URL and auth.

Tools, content parts, tool choice, response format and seed go out as is
(the request model is OpenAI-shaped). A reply's `message.tool_calls` become our
`ToolCall`s; a stream's `delta.tool_calls` fragments are assembled by `index`
into the final delta's calls. A reply with calls is a tool turn whatever its
finish reason says (a named `tool_choice` ends with `stop`). Usage details:
`prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import httpx
from httpx_sse import ServerSentEvent

from dispatcher.errors import (
    ContentFiltered,
    DispatcherError,
    InvalidVendorOutput,
    VendorQuotaExceeded,
    VendorUnavailable,
)
from dispatcher.models import FinishReason, Message, Request, ToolCall, Usage
from dispatcher.vendors.auth import auth_headers_and_params, request_headers
from dispatcher.vendors.base import Completion, HttpVendor, StreamDelta, StreamParser
from dispatcher.vendors.failures import error_for_status, json_or_none, retry_after_s, summary
from dispatcher.vendors.tool_calls import ToolCallAssembler, tool_call

__all__ = [
    "FINISH_REASONS",
    "ChatStreamParser",
    "OpenAIVendor",
    "chat_body",
    "classify_error",
    "parse_chat_completion",
    "parse_tool_calls",
    "wire_message",
]

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,  # deprecated spelling of tool_calls
}


def finish_reason(raw: str | None) -> FinishReason:
    """Our finish reason for OpenAI's; an absent one is a plain stop, an unknown one an error."""
    if raw is None:
        return FinishReason.STOP
    return FINISH_REASONS.get(raw, FinishReason.ERROR)


def chat_body(
    request: Request,
    model: str | None,
    *,
    stream: bool,
    max_tokens_field: str = "max_completion_tokens",
    include_usage: bool = True,
) -> dict[str, Any]:
    """The Chat Completions body for `request`; `model` None leaves the field out (Azure)."""
    body: dict[str, Any] = {"messages": [wire_message(m) for m in request.messages]}
    if model is not None:
        body["model"] = model
    if request.max_tokens is not None:
        body[max_tokens_field] = request.max_tokens
    for name in ("temperature", "top_p", "user"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.stop:
        body["stop"] = list(request.stop)
    if request.tools is not None:
        body["tools"] = [tool.model_dump(exclude_none=True) for tool in request.tools]
    if request.tool_choice is not None:
        choice = request.tool_choice
        body["tool_choice"] = choice if isinstance(choice, str) else choice.model_dump()
    if request.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.response_format is not None:
        body["response_format"] = request.response_format.model_dump(
            by_alias=True, exclude_none=True
        )
    if request.seed is not None:
        body["seed"] = request.seed
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    body.update(request.extra_body)
    return body


def wire_message(message: Message) -> dict[str, Any]:
    """One message as Chat Completions takes it (`vendor_state` is ours: it stays home)."""
    content = message.content
    if type(content) is str and message.tool_calls is None and message.tool_call_id is None:
        return {"role": message.role.value, "content": content}
    wire: dict[str, Any] = {"role": message.role.value}
    if isinstance(content, list):
        wire["content"] = [part.model_dump(exclude_none=True) for part in content]
    else:
        wire["content"] = content
    if message.tool_calls:
        wire["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    if message.tool_call_id is not None:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def parse_tool_calls(data: Any, vendor: str) -> tuple[ToolCall, ...]:
    """`message.tool_calls` as our calls; a call of another type than function is refused."""
    if not isinstance(data, list):
        return ()
    calls = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            continue
        kind = item.get("type") or "function"
        if kind != "function":
            raise InvalidVendorOutput(
                f"{vendor} sent a tool call of type {kind!r}; we only declare function tools",
                raw_text=json.dumps(item),
                vendor=vendor,
            )
        function = item.get("function") or {}
        calls.append(
            tool_call(
                item.get("id"),
                function.get("name"),
                function.get("arguments"),
                vendor=vendor,
                index=index,
            )
        )
    return tuple(calls)


def tool_turn(reason: FinishReason, calls: tuple[ToolCall, ...]) -> FinishReason:
    """`tool_calls` when the reply has calls (a named tool_choice ends with `stop`)."""
    return FinishReason.TOOL_CALLS if calls and reason is FinishReason.STOP else reason


def parse_usage(data: Any) -> Usage:
    """Usage from an OpenAI `usage` object (missing or null counts are 0).

    The cached and reasoning parts sit in `prompt_tokens_details.cached_tokens`
    and `completion_tokens_details.reasoning_tokens`.
    """
    if not isinstance(data, dict):
        return Usage()
    prompt_details = data.get("prompt_tokens_details")
    completion_details = data.get("completion_tokens_details")
    return Usage(
        prompt_tokens=int(data.get("prompt_tokens") or 0),
        completion_tokens=int(data.get("completion_tokens") or 0),
        total_tokens=int(data.get("total_tokens") or 0),
        cached_prompt_tokens=_detail(prompt_details, "cached_tokens"),
        reasoning_tokens=_detail(completion_details, "reasoning_tokens"),
    )


def _detail(details: Any, name: str) -> int:
    """One count from a `*_tokens_details` object; absent or null is 0."""
    return int(details.get(name) or 0) if isinstance(details, dict) else 0


def parse_chat_completion(body: Any, vendor: str = "openai") -> Completion:
    """A non-streamed Chat Completions body."""
    choices = body.get("choices") if isinstance(body, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") or {}
    text = message.get("content") or ""
    raw = choice.get("finish_reason")
    calls = parse_tool_calls(message.get("tool_calls"), vendor)
    reason = tool_turn(finish_reason(raw), calls)
    if not text and not calls and message.get("refusal"):
        text, reason = str(message["refusal"]), FinishReason.CONTENT_FILTER
    return Completion(
        text=str(text),
        finish_reason=reason,
        usage=parse_usage(body.get("usage") if isinstance(body, dict) else None),
        model=body.get("model") if isinstance(body, dict) else None,
        vendor_finish_reason=raw,
        tool_calls=calls,
    )


class ChatStreamParser(StreamParser):
    """`data: {chunk}` events until `data: [DONE]`; usage comes in a chunk with no choices.

    `delta.tool_calls` fragments are collected by their `index` (only the first
    of a call has its id and name) and handed over whole in the final delta.
    """

    def __init__(self, vendor: str) -> None:
        super().__init__(vendor)
        self.done = False
        self.raw_finish: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.tool_calls = ToolCallAssembler(vendor)

    def feed(self, item: ServerSentEvent) -> list[StreamDelta]:
        if item.data == "[DONE]":
            self.done = True
            return []
        chunk = json_or_none(item.data)
        if not isinstance(chunk, dict):
            return []
        if "error" in chunk:
            raise in_stream_error(chunk["error"], self.vendor)
        self.model = chunk.get("model") or self.model
        if chunk.get("usage"):
            self.usage = parse_usage(chunk["usage"])
        deltas: list[StreamDelta] = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            # Azure sends filter-only chunks without a delta: treat it as empty.
            delta = choice.get("delta") or {}
            deltas += self.text(delta.get("content") or "")
            for fragment in delta.get("tool_calls") or ():
                self._add_fragment(fragment)
            if choice.get("finish_reason"):
                self.raw_finish = choice["finish_reason"]
        return deltas

    def _add_fragment(self, fragment: Any) -> None:
        if not isinstance(fragment, dict):
            return
        function = fragment.get("function") or {}
        self.tool_calls.add(
            fragment.get("index", 0),
            call_id=fragment.get("id"),
            name=function.get("name"),
            arguments=function.get("arguments"),
        )

    def finish(self) -> StreamDelta:
        if not self.done:
            raise self.broken("data: [DONE]")
        calls = self.tool_calls.calls()
        return StreamDelta(
            finish_reason=tool_turn(finish_reason(self.raw_finish), calls),
            usage=self.usage,
            vendor_finish_reason=self.raw_finish,
            model=self.model,
            tool_calls=calls,
        )


def in_stream_error(error: Any, vendor: str) -> DispatcherError:
    """A failure reported inside a 200 stream: the vendor gave up mid-answer."""
    message = error.get("message") if isinstance(error, dict) else str(error)
    return VendorUnavailable(f"{vendor} failed mid-stream: {message}", vendor=vendor)


def classify_error(status: int, headers: httpx.Headers, body: str, vendor: str) -> DispatcherError:
    """OpenAI's (and Azure's) `{"error": {"message", "type", "code"}}` bodies."""
    data = json_or_none(body)
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        code = str(error.get("code") or "")
        kind = str(error.get("type") or "")
    else:
        message, code, kind = summary(body), "", ""
    if status == 429 and "insufficient_quota" in (code, kind):
        return VendorQuotaExceeded(
            f"{vendor} quota exhausted: {message} (retrying will not help; check billing)",
            vendor=vendor,
            status_code=status,
        )
    if code == "content_filter" or (
        isinstance(error, dict)
        and isinstance(error.get("innererror"), dict)
        and error["innererror"].get("code") == "ResponsibleAIPolicyViolation"
    ):
        return ContentFiltered(
            f"{vendor} refused the prompt: {message}", vendor=vendor, status_code=status
        )
    detail = f"{message} ({code})" if code and code not in message else message
    return error_for_status(status, detail, vendor=vendor, retry_after=retry_after_s(headers))


class OpenAIVendor(HttpVendor):
    """api.openai.com, or any base URL given in the configuration."""

    #: The field `max_tokens` is sent as; older servers know only `max_tokens`.
    default_max_tokens_field: ClassVar[str] = "max_completion_tokens"

    @property
    def base_url(self) -> str:
        """The configured base URL, without a trailing slash."""
        return (self.config.endpoint or "").rstrip("/")

    @property
    def max_tokens_field(self) -> str:
        """Where `max_tokens` goes in the body."""
        return self.config.max_tokens_field or self.default_max_tokens_field

    def auth(self) -> tuple[dict[str, str], dict[str, str]]:
        """The headers and query parameters that authenticate a call."""
        return auth_headers_and_params(self.config)

    def chat_url(self, model: str) -> str:
        """Where chat completions are posted."""
        return f"{self.base_url}/chat/completions"

    def query_params(self) -> dict[str, str]:
        """Query parameters every call carries besides credentials (Azure's api-version)."""
        return {}

    def url(self, path_url: str, auth_params: dict[str, str]) -> httpx.URL:
        """`path_url` with our query parameters added to any it already has."""
        # httpx's `params=` would replace a query written into a configured base URL.
        return self.parsed_url(path_url, {**self.query_params(), **auth_params})

    def body_model(self, model: str) -> str | None:
        """The `model` field of the body (None: left out)."""
        return model

    def call_headers(self) -> tuple[httpx.Headers, dict[str, str]]:
        """The headers and query parameters of every call, built once (they come from config)."""
        built: tuple[httpx.Headers, dict[str, str]] | None = getattr(self, "_call_headers", None)
        if built is None:
            headers, params = self.auth()
            built = self._call_headers = (request_headers(self.config, headers), params)
        return built

    def build_request(self, request: Request, model: str, *, stream: bool) -> httpx.Request:
        headers, params = self.call_headers()
        body = chat_body(
            request, self.body_model(model), stream=stream, max_tokens_field=self.max_tokens_field
        )
        return httpx.Request(
            "POST",
            self.url(self.chat_url(model), params),
            headers=headers,
            content=json.dumps(body).encode(),
        )

    def parse_response(self, body: Any) -> Completion:
        return parse_chat_completion(body, self.name)

    def stream_parser(self) -> StreamParser:
        return ChatStreamParser(self.name)

    def classify_error(self, status: int, headers: httpx.Headers, body: str) -> DispatcherError:
        return classify_error(status, headers, body, self.name)

    def health_request(self) -> httpx.Request:
        headers, params = self.auth()
        return httpx.Request(
            "GET",
            self.url(self.models_url(), params),
            headers=request_headers(self.config, headers),
        )

    def models_url(self) -> str:
        """The cheap authenticated listing the health check calls."""
        return f"{self.base_url}/models"
