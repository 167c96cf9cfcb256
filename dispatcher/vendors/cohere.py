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
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from dispatcher.errors import DispatcherError, VendorTimeout, VendorUnavailable
from dispatcher.models import FinishReason, Request, Usage
from dispatcher.vendors.auth import request_headers
from dispatcher.vendors.base import Completion, HttpVendor, StreamDelta, StreamParser
from dispatcher.vendors.failures import error_for_status, json_or_none, retry_after_s, summary

__all__ = [
    "FINISH_REASONS",
    "ChatStreamParser",
    "CohereVendor",
    "chat_body",
    "classify_error",
    "finish_reason",
    "parse_chat_response",
]

FINISH_REASONS: dict[str, FinishReason] = {
    "COMPLETE": FinishReason.STOP,
    "STOP_SEQUENCE": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    "TOOL_CALL": FinishReason.TOOL_CALLS,
    "ERROR": FinishReason.ERROR,
    "TIMEOUT": FinishReason.ERROR,
}

# Status 499: the request was cancelled by the client; the retry layer should not
# resend on its own, so it is classified as final (InvalidRequest) like other 4xx.
CLIENT_CLOSED_REQUEST = 499


def finish_reason(raw: str | None) -> FinishReason:
    """Our finish reason for Cohere's; an absent one is a plain stop, an unknown one an error."""
    if raw is None:
        return FinishReason.STOP
    return FINISH_REASONS.get(raw, FinishReason.ERROR)


def chat_body(request: Request, model: str, *, stream: bool) -> dict[str, Any]:
    """The v2 Chat body for `request`; unset options are left out."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role.value, "content": m.content} for m in request.messages],
    }
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.top_p is not None:
        body["p"] = request.top_p  # Cohere's name for top_p; `k` is top-k
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if stream:
        body["stream"] = True
    body.update(request.extra_body)
    return body


def _count(tokens: Any, billed: Any, name: str) -> int:
    """One count from `tokens`, else from `billed_units`; the schema types them as floats."""
    for source in (tokens, billed):
        if isinstance(source, dict) and source.get(name) is not None:
            return int(source[name])
    return 0


def parse_usage(data: Any) -> Usage:
    """Usage from a Cohere `usage` object: model-side `tokens`, else `billed_units`."""
    if not isinstance(data, dict):
        return Usage()
    tokens, billed = data.get("tokens"), data.get("billed_units")
    return Usage(
        prompt_tokens=_count(tokens, billed, "input_tokens"),
        completion_tokens=_count(tokens, billed, "output_tokens"),
    )


def parse_chat_response(body: Any) -> Completion:
    """A non-streamed v2 Chat body."""
    if not isinstance(body, dict):
        body = {}
    message = body.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    text = "".join(
        str(item.get("text") or "")
        for item in content or []
        if isinstance(item, dict) and item.get("type") == "text"
    )
    raw = body.get("finish_reason")
    return Completion(
        text=text,
        finish_reason=finish_reason(raw),
        usage=parse_usage(body.get("usage")),
        vendor_finish_reason=raw,
    )


class ChatStreamParser(StreamParser):
    """v2 Chat stream events, dispatched on their `type`, until `message-end`.

    Only `content-delta` and `message-end` matter here; tool, citation and debug
    events are skipped, and so is the `data: [DONE]` the SDK tolerates at the end.
    """

    def __init__(self, vendor: str) -> None:
        super().__init__(vendor)
        self.done = False
        self.raw_finish: str | None = None
        self.usage: Usage | None = None

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
        if kind == "message-end":
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
        return StreamDelta(
            finish_reason=finish_reason(self.raw_finish),
            usage=self.usage,
            vendor_finish_reason=self.raw_finish,
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
        return httpx.Request(
            "POST",
            f"{self.base_url}/v2/chat",
            headers=request_headers(self.config, self.auth()),
            content=json.dumps(chat_body(request, model, stream=stream)).encode(),
        )

    def parse_response(self, body: Any) -> Completion:
        return parse_chat_response(body)

    def stream_parser(self) -> StreamParser:
        return ChatStreamParser(self.name)

    def classify_error(self, status: int, headers: httpx.Headers, body: str) -> DispatcherError:
        return classify_error(status, headers, body, self.name)

    def health_request(self) -> httpx.Request:
        return httpx.Request(
            "GET", f"{self.base_url}/v1/models", headers=request_headers(self.config, self.auth())
        )
