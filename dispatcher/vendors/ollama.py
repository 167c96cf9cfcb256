"""Ollama's native chat API: one JSON object per line, ending with a `"done": true` line.

Request: `POST {endpoint}/api/chat`, with no auth locally (Bearer when a key is
configured, for ollama.com or a remote host behind auth). The sampling knobs go
in `options` (`max_tokens` is `num_predict`), `user` is dropped, and `stream` is
always sent, because Ollama streams unless told `"stream": false`. Reply:
`message.content`, usage in `prompt_eval_count` / `eval_count` (older servers
leave the first out on a cache hit: 0 then). Stream: NDJSON; any line may be a
bare `{"error": "..."}` after HTTP 200, so every line is checked for it first,
and a body that ends without `done: true` is broken. Error bodies are
`{"error": "text"}`; a 404 usually means the model was never pulled.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import httpx

from dispatcher.errors import (
    DispatcherError,
    InvalidRequest,
    StreamBroken,
    VendorUnavailable,
)
from dispatcher.models import FinishReason, Request, Usage
from dispatcher.vendors.auth import auth_headers_and_params, request_headers
from dispatcher.vendors.base import Completion, HttpVendor, StreamDelta, StreamParser
from dispatcher.vendors.failures import error_for_status, json_or_none, retry_after_s, summary

__all__ = [
    "DONE_REASONS",
    "ChatNdjsonParser",
    "OllamaVendor",
    "chat_body",
    "classify_error",
    "parse_chat_response",
]

DONE_REASONS: dict[str, FinishReason] = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    # An empty request loaded or unloaded the model: nothing was generated.
    "load": FinishReason.STOP,
    "unload": FinishReason.STOP,
}
NO_GENERATION = frozenset({"load", "unload"})

# Our request fields that Ollama takes inside `options`, under its own names.
OPTION_NAMES = (("temperature", "temperature"), ("max_tokens", "num_predict"), ("top_p", "top_p"))


def finish_reason(raw: str | None, *, tool_calls: bool = False) -> FinishReason:
    """Our finish reason for a `done_reason`; absent (older servers) is a stop, unknown an error."""
    reason = FinishReason.STOP if raw is None else DONE_REASONS.get(raw, FinishReason.ERROR)
    if reason is FinishReason.STOP and tool_calls and raw not in NO_GENERATION:
        return FinishReason.TOOL_CALLS
    return reason


def chat_body(request: Request, model: str, *, stream: bool) -> dict[str, Any]:
    """The `/api/chat` body for `request`.

    `extra_body` is merged at the top level (`keep_alive`, `format`, `think`),
    except that its `options` are merged into ours (`num_ctx`, `seed`), and it
    cannot change `stream`, which decides how the reply is read.
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role.value, "content": m.content} for m in request.messages],
    }
    options: dict[str, Any] = {}
    for ours, theirs in OPTION_NAMES:
        value = getattr(request, ours)
        if value is not None:
            options[theirs] = value
    if request.stop:
        options["stop"] = list(request.stop)
    extra = dict(request.extra_body)
    extra_options = extra.get("options")
    if isinstance(extra_options, dict):
        options.update(extra_options)
        del extra["options"]
    if options:
        body["options"] = options
    body.update(extra)
    body["stream"] = stream
    return body


def parse_usage(data: dict[str, Any]) -> Usage:
    """Usage from a final line or reply; a missing count is 0, not an error."""
    return Usage(
        prompt_tokens=int(data.get("prompt_eval_count") or 0),
        completion_tokens=int(data.get("eval_count") or 0),
    )


def _message(data: dict[str, Any]) -> dict[str, Any]:
    message = data.get("message")
    return message if isinstance(message, dict) else {}


def parse_chat_response(body: dict[str, Any]) -> Completion:
    """A non-streamed `/api/chat` reply."""
    message = _message(body)
    done_reason = body.get("done_reason")
    raw = str(done_reason) if done_reason is not None else None
    text = "" if raw in NO_GENERATION else str(message.get("content") or "")
    return Completion(
        text=text,
        finish_reason=finish_reason(raw, tool_calls=bool(message.get("tool_calls"))),
        usage=parse_usage(body),
        model=body.get("model"),
        vendor_finish_reason=raw,
    )


def error_text(error: Any) -> str:
    """The message of an `error` value: a plain string natively, an object from proxies."""
    if isinstance(error, dict):
        return str(error.get("message") or json.dumps(error))
    return str(error)


class ChatNdjsonParser(StreamParser):
    """NDJSON lines until one with `"done": true`; a line with `error` is a failure."""

    def __init__(self, vendor: str) -> None:
        super().__init__(vendor)
        self.done = False
        self.raw_finish: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.tool_calls = False

    def feed(self, item: str) -> list[StreamDelta]:
        line = json_or_none(item)
        if not isinstance(line, dict):
            return []
        # First, on every line: a failure after HTTP 200 is a bare {"error": "..."}.
        if "error" in line:
            raise StreamBroken(
                f"{self.vendor} reported an error inside the stream: "
                f"{summary(error_text(line['error']))}",
                partial=self.text_seen,
                vendor=self.vendor,
            )
        if self.done:
            return []
        self.model = line.get("model") or self.model
        message = _message(line)
        self.tool_calls = self.tool_calls or bool(message.get("tool_calls"))
        deltas = self.text(str(message.get("content") or ""))
        if line.get("done"):
            self.done = True
            raw = line.get("done_reason")
            self.raw_finish = str(raw) if raw is not None else None
            self.usage = parse_usage(line)
        return deltas

    def finish(self) -> StreamDelta:
        if not self.done:
            raise self.broken("a line with done: true")
        return StreamDelta(
            finish_reason=finish_reason(self.raw_finish, tool_calls=self.tool_calls),
            usage=self.usage,
            vendor_finish_reason=self.raw_finish,
            model=self.model,
        )


def classify_error(status: int, headers: httpx.Headers, body: str, vendor: str) -> DispatcherError:
    """Ollama's `{"error": "text"}` bodies, by the common status table."""
    data = json_or_none(body)
    error = data.get("error") if isinstance(data, dict) else None
    message = summary(error_text(error)) if error is not None else summary(body)
    if status == 404:
        return InvalidRequest(
            f"{vendor} answered HTTP 404: {message or '(no message)'} (pull the model on the "
            "Ollama host first: `ollama pull <model>`; or check that base_url is an Ollama server)",
            vendor=vendor,
            status_code=status,
        )
    return error_for_status(status, message, vendor=vendor, retry_after=retry_after_s(headers))


class OllamaVendor(HttpVendor):
    """A local or remote Ollama server, by its native `/api/chat`."""

    stream_framing: ClassVar[Literal["sse", "ndjson"]] = "ndjson"
    base_url_hint = "e.g. http://localhost:11434"

    @property
    def base_url(self) -> str:
        """The configured endpoint, without a trailing slash."""
        return (self.config.endpoint or "").rstrip("/")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Request:
        headers, params = auth_headers_and_params(self.config)
        return httpx.Request(
            method,
            f"{self.base_url}{path}",
            params=params,
            headers=request_headers(self.config, headers),
            content=json.dumps(body).encode() if body is not None else None,
        )

    def build_request(self, request: Request, model: str, *, stream: bool) -> httpx.Request:
        return self._call("POST", "/api/chat", chat_body(request, model, stream=stream))

    def parse_response(self, body: Any) -> Completion:
        if not isinstance(body, dict):
            raise VendorUnavailable(
                "the vendor answered with JSON that is not a chat reply",
                vendor=self.name,
                status_code=200,
            )
        if "error" in body:
            message = summary(error_text(body["error"]))
            raise VendorUnavailable(
                f"{self.name} answered HTTP 200 with an error: {message}",
                vendor=self.name,
                status_code=200,
            )
        return parse_chat_response(body)

    def stream_parser(self) -> StreamParser:
        return ChatNdjsonParser(self.name)

    def classify_error(self, status: int, headers: httpx.Headers, body: str) -> DispatcherError:
        return classify_error(status, headers, body, self.name)

    def health_request(self) -> httpx.Request:
        return self._call("GET", "/api/tags")
