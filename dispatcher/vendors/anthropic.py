"""Anthropic Messages: named SSE events, a top-level system prompt, a required max_tokens.

Request: `POST {base}/v1/messages` with `x-api-key` (never `Authorization`)
and the required `anthropic-version`. System messages go to the top-level
`system` field, since a `system` role in `messages` is a 400. `max_tokens` is
required, so we supply a default, and `stop` goes out as `stop_sequences`.
Version 2026-10-21 refuses `temperature`/`top_p` even at their defaults, and
older versions refuse the two together, so we send at most one.
Reply: the text is the concatenation of the `text` blocks in `content`, with
usage in `usage.input_tokens` / `usage.output_tokens`.
Stream: `message_start` (input usage, model), `content_block_delta`
(`text_delta`), `message_delta` (stop reason and *cumulative* usage, so it
overwrites) and finally `message_stop`, without which the reply is incomplete.
`ping` and unknown events are ignored. `event: error` is a failure after HTTP
200. Errors: `{"type":"error","error":{"type","message"}}`. 529 means
overloaded, and 429's wait falls back on the RFC 3339
`anthropic-ratelimit-*-reset` headers.

Tools, images, response formats and seed are mapped in `anthropic_blocks`
(structured output: `output_config.format`, Anthropic's own mechanism, not a
forced tool; json_object: an instruction; seed: refused). A reply's
`tool_use` blocks become our `ToolCall`s (the `input` object as compact JSON
text); a stream's call opens with `content_block_start` of a `tool_use` block
and its input comes as `input_json_delta.partial_json` fragments, joined by
block index; `stop_reason: tool_use` is the tool turn. `thinking` and
`redacted_thinking` blocks (streamed: `thinking_delta` and `signature_delta`)
are kept, as received, in `vendor_state` so the next turn hands them back.
Usage: `input_tokens` excludes the cache, so the prompt is it plus
`cache_creation_input_tokens` and `cache_read_input_tokens`; the reads are
`cached_prompt_tokens`, `output_tokens_details.thinking_tokens` the
reasoning tokens.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from dispatcher.config.schema import VendorConfig
from dispatcher.errors import DispatcherError, InvalidRequest, VendorQuotaExceeded
from dispatcher.models import FinishReason, Request, Role, Usage
from dispatcher.vendors import anthropic_blocks as blocks
from dispatcher.vendors.auth import request_headers
from dispatcher.vendors.base import Completion, HttpVendor, StreamDelta, StreamParser
from dispatcher.vendors.failures import error_for_status, json_or_none, retry_after_s, summary
from dispatcher.vendors.tool_calls import ToolCallAssembler, arguments_text, tool_call

__all__ = [
    "DEFAULT_API_VERSION",
    "DEFAULT_MAX_TOKENS",
    "ERROR_TYPE_STATUS",
    "FINISH_REASONS",
    "AnthropicVendor",
    "MessagesStreamParser",
    "build_body",
    "classify_error",
    "parse_message",
    "parse_usage",
    "rate_limit_reset_s",
]

logger = logging.getLogger(__name__)

# The version every Anthropic model accepts and the one that still takes sampling
# knobs; 2026-10-21 must be chosen on purpose (api_version) since it refuses them.
DEFAULT_API_VERSION = "2023-06-01"
# From this version on, temperature/top_p/top_k are a 400 even at default values.
# Versions are ISO dates, so later versions compare greater as strings.
SAMPLING_REMOVED_VERSION = "2026-10-21"
# The API refuses a request without max_tokens; 4096 fits every current model's
# output limit and is long enough for ordinary replies not to be cut short.
DEFAULT_MAX_TOKENS = 4096

FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    # A paused server-tool turn: the output is incomplete until it is sent back.
    "pause_turn": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}

# An `error.type` as the HTTP status that carries it, to classify in-stream errors.
ERROR_TYPE_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_RESET_PREFIX = "anthropic-ratelimit-"
_RESET_SUFFIX = "-reset"


def finish_reason(raw: str | None) -> FinishReason:
    """Our finish reason for Anthropic's stop reason; absent is a plain stop, unknown an error."""
    if raw is None:
        return FinishReason.STOP
    return FINISH_REASONS.get(raw, FinishReason.ERROR)


def drops_sampling(api_version: str) -> bool:
    """True when this API version refuses `temperature` and `top_p` altogether."""
    return api_version >= SAMPLING_REMOVED_VERSION


def build_body(
    request: Request, model: str, *, stream: bool, api_version: str = DEFAULT_API_VERSION
) -> dict[str, Any]:
    """The Messages body for `request`, as `api_version` accepts it.

    Raises:
        InvalidRequest: the request has only system messages, asks for a seed, or
            holds what Anthropic cannot take (a call's arguments that are no object).
    """
    if request.seed is not None:
        raise InvalidRequest(
            "seed: Anthropic has no repeatable sampling; leave seed out for this vendor"
        )
    system = [m.text for m in request.messages if m.role is Role.SYSTEM]
    if blocks.wants_json_object(request):
        system.append(blocks.JSON_OBJECT_INSTRUCTION)
    messages = blocks.wire_messages(request.messages)
    if not messages:
        raise InvalidRequest("Anthropic needs at least one user or assistant message")
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if not drops_sampling(api_version):
        # Recent models refuse temperature together with top_p: temperature wins.
        if request.temperature is not None:
            body["temperature"] = request.temperature
        elif request.top_p is not None:
            body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.user is not None:
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    body.update(blocks.surface_fields(request))
    body.update(blocks.merged_extra_body(request, body))
    return body


# The usage counts Anthropic reports, as they come (streams update some of them).
_USAGE_FIELDS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


def parse_usage(data: Any) -> Usage:
    """Usage from an Anthropic `usage` object (missing or null counts are 0).

    `input_tokens` excludes cache writes and reads, so the prompt is all three.
    """
    if not isinstance(data, dict):
        return Usage()
    counts = {name: int(data.get(name) or 0) for name in _USAGE_FIELDS}
    details = data.get("output_tokens_details")
    thinking = details.get("thinking_tokens") if isinstance(details, dict) else None
    return Usage(
        prompt_tokens=counts["input_tokens"]
        + counts["cache_creation_input_tokens"]
        + counts["cache_read_input_tokens"],
        completion_tokens=counts["output_tokens"],
        cached_prompt_tokens=counts["cache_read_input_tokens"],
        reasoning_tokens=int(thinking or 0),
    )


def parse_message(body: Any, vendor: str = "anthropic") -> Completion:
    """A non-streamed Messages body: `text` blocks make the text, `tool_use` blocks the
    calls, and `thinking` blocks (as received) the vendor state."""
    if not isinstance(body, dict):
        return Completion(text="", finish_reason=FinishReason.ERROR)
    content = body.get("content")
    items = [
        block for block in (content if isinstance(content, list) else []) if isinstance(block, dict)
    ]
    text = "".join(str(block.get("text") or "") for block in items if block.get("type") == "text")
    uses = [block for block in items if block.get("type") == "tool_use"]
    calls = tuple(
        tool_call(
            block.get("id"),
            block.get("name"),
            arguments_text(block.get("input")),
            vendor=vendor,
            index=index,
        )
        for index, block in enumerate(uses)
    )
    raw = body.get("stop_reason")
    return Completion(
        text=text,
        finish_reason=finish_reason(raw),
        usage=parse_usage(body.get("usage")),
        model=body.get("model"),
        vendor_finish_reason=raw,
        tool_calls=calls,
        vendor_state=blocks.thinking_state(
            tuple(block for block in items if block.get("type") in blocks.THINKING_TYPES)
        ),
    )


class MessagesStreamParser(StreamParser):
    """Named SSE events from `message_start` to `message_stop`; usage is cumulative.

    A `tool_use` block's input arrives as `input_json_delta` fragments, joined
    by block index; `thinking` blocks are rebuilt from their deltas (text and
    signature) and handed over in the final delta, as the reply would hold them.
    """

    def __init__(self, vendor: str) -> None:
        super().__init__(vendor)
        self.stopped = False
        self.raw_finish: str | None = None
        self.usage: dict[str, Any] = {}
        self.model: str | None = None
        self.tool_calls = ToolCallAssembler(vendor)
        self.thinking: dict[Any, dict[str, Any]] = {}

    def feed(self, item: ServerSentEvent) -> list[StreamDelta]:
        data = json_or_none(item.data)
        # The event name is authoritative; the JSON `type` repeats it.
        kind = item.event
        if kind == "message" and isinstance(data, dict):
            kind = str(data.get("type") or kind)
        if kind == "error":
            error = data.get("error") if isinstance(data, dict) else None
            raise in_stream_error(error, item.data, self.vendor, partial=self.text_seen)
        if not isinstance(data, dict) or self.stopped:
            return []
        if kind == "message_start":
            message = _object(data.get("message"))
            self.model = message.get("model") or self.model
            self._take_usage(message.get("usage"))
        elif kind == "content_block_start":
            return self._start(data.get("index"), _object(data.get("content_block")))
        elif kind == "content_block_delta":
            return self._delta(data.get("index"), _object(data.get("delta")))
        elif kind == "message_delta":
            self.raw_finish = _object(data.get("delta")).get("stop_reason") or self.raw_finish
            self._take_usage(data.get("usage"))
        elif kind == "message_stop":
            self.stopped = True
        return []

    def _start(self, index: Any, block: dict[str, Any]) -> list[StreamDelta]:
        kind = block.get("type")
        if kind == "text":
            return self.text(str(block.get("text") or ""))
        if kind == "tool_use":
            # The start block's `input: {}` is a placeholder: the fragments make the input.
            self.tool_calls.add(index, call_id=block.get("id"), name=block.get("name"))
        elif kind in blocks.THINKING_TYPES:
            self.thinking[index] = dict(block)
        return []

    def _delta(self, index: Any, delta: dict[str, Any]) -> list[StreamDelta]:
        kind = delta.get("type")
        if kind == "text_delta":
            return self.text(str(delta.get("text") or ""))
        if kind == "input_json_delta":
            self.tool_calls.add(index, arguments=delta.get("partial_json"))
        elif kind == "thinking_delta" and index in self.thinking:
            block = self.thinking[index]
            block["thinking"] = str(block.get("thinking") or "") + str(delta.get("thinking") or "")
        elif kind == "signature_delta" and index in self.thinking:
            self.thinking[index]["signature"] = str(delta.get("signature") or "")
        # citations and unknown deltas are not reply text.
        return []

    def finish(self) -> StreamDelta:
        if not self.stopped:
            raise self.broken("message_stop")
        usage = parse_usage(self.usage) if self.usage else None
        calls = self.tool_calls.calls()
        return StreamDelta(
            finish_reason=finish_reason(self.raw_finish),
            usage=usage,
            vendor_finish_reason=self.raw_finish,
            model=self.model,
            tool_calls=calls,
            vendor_state=blocks.thinking_state(tuple(self.thinking.values())),
        )

    def _take_usage(self, usage: Any) -> None:
        # Counts are running totals: the latest one replaces, never adds to, the last;
        # a count message_delta leaves out keeps its message_start value.
        if not isinstance(usage, dict):
            return
        for name, value in usage.items():
            if value is not None:
                self.usage[name] = value


def _object(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one: vendors add and change fields."""
    return value if isinstance(value, dict) else {}


def in_stream_error(error: Any, raw: str, vendor: str, *, partial: bool) -> DispatcherError:
    """An `event: error` after HTTP 200, classified by `error.type` as its status would be."""
    if isinstance(error, dict):
        kind = str(error.get("type") or "")
        message = f"{error.get('message') or '(no message)'} ({kind})"
    else:
        kind, message = "", summary(raw)
    if partial:
        message += "; the reply so far is incomplete"
    status = ERROR_TYPE_STATUS.get(kind, 500)
    return error_for_status(status, f"error inside the stream: {message}", vendor=vendor)


def rate_limit_reset_s(headers: httpx.Headers, now: float) -> float | None:
    """Seconds until the latest `anthropic-ratelimit-*-reset`, preferring exhausted limits.

    A reset counts as exhausted when its `*-remaining` header is 0; when no
    limit says so, every reset is considered.
    """
    resets: dict[str, float] = {}
    for name, value in headers.items():
        lower = name.lower()
        if not (lower.startswith(_RESET_PREFIX) and lower.endswith(_RESET_SUFFIX)):
            continue
        try:
            resets[lower[: -len(_RESET_SUFFIX)]] = datetime.fromisoformat(value).timestamp()
        except ValueError:
            continue
    exhausted = [at for limit, at in resets.items() if headers.get(f"{limit}-remaining") == "0"]
    candidates = exhausted or list(resets.values())
    return max(0.0, max(candidates) - now) if candidates else None


def classify_error(
    status: int,
    headers: httpx.Headers,
    body: str,
    vendor: str,
    *,
    now: Callable[[], float] = time.time,
) -> DispatcherError:
    """Anthropic's `{"type": "error", "error": {"type", "message"}}` bodies, by status."""
    data = json_or_none(body)
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        kind = str(error.get("type") or "")
    else:
        message, kind = summary(body), ""
    detail = f"{message} ({kind})" if kind and kind not in message else message
    if status == 402:
        return VendorQuotaExceeded(
            f"{vendor} answered HTTP 402: {detail} (retrying will not help; check billing)",
            vendor=vendor,
            status_code=status,
        )
    retry_after = None
    if status == 429:
        at = now()
        retry_after = retry_after_s(headers, at)
        if retry_after is None:
            retry_after = rate_limit_reset_s(headers, at)
    return error_for_status(status, detail, vendor=vendor, retry_after=retry_after)


class AnthropicVendor(HttpVendor):
    """api.anthropic.com, or any base URL given in the configuration."""

    request_id_header = "request-id"

    def __init__(
        self,
        name: str,
        config: VendorConfig,
        client: httpx.AsyncClient | None = None,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name, config, client)
        self.now = now
        self._told_sampling_dropped = False

    @property
    def base_url(self) -> str:
        """The configured base URL, without a trailing slash."""
        return (self.config.endpoint or "").rstrip("/")

    @property
    def api_version(self) -> str:
        """The `anthropic-version` sent, which also decides what the body may hold."""
        return self.config.api_version or DEFAULT_API_VERSION

    def headers(self) -> httpx.Headers:
        """The configured headers, then `x-api-key` and `anthropic-version`."""
        auth = {"anthropic-version": self.api_version}
        if self.config.api_key is not None:
            auth["x-api-key"] = self.config.api_key.get_secret_value()
        return request_headers(self.config, auth)

    def build_request(self, request: Request, model: str, *, stream: bool) -> httpx.Request:
        try:
            body = build_body(request, model, stream=stream, api_version=self.api_version)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, vendor=self.name) from None
        dropped = request.temperature is not None or request.top_p is not None
        if dropped and drops_sampling(self.api_version) and not self._told_sampling_dropped:
            self._told_sampling_dropped = True
            logger.warning(
                "vendor %s: anthropic-version %s refuses temperature and top_p; not sending them",
                self.name,
                self.api_version,
            )
        return httpx.Request(
            "POST",
            f"{self.base_url}/v1/messages",
            headers=self.headers(),
            content=json.dumps(body).encode(),
        )

    def parse_response(self, body: Any) -> Completion:
        return parse_message(body, self.name)

    def stream_parser(self) -> StreamParser:
        return MessagesStreamParser(self.name)

    def classify_error(self, status: int, headers: httpx.Headers, body: str) -> DispatcherError:
        return classify_error(status, headers, body, self.name, now=self.now)

    def health_request(self) -> httpx.Request:
        return httpx.Request("GET", f"{self.base_url}/v1/models", headers=self.headers())
