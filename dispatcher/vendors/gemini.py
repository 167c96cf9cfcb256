"""Google Gemini `generateContent`: Google's own roles, camelCase fields and RPC-style errors.

Request: `POST {base}/v1beta/models/{model}:generateContent` (streaming:
`:streamGenerateContent?alt=sse`) with the key in `x-goog-api-key`, never in
the URL where logs would keep it. `assistant` turns become role `model`, system
messages become one `systemInstruction`, sampling knobs go under
`generationConfig`. Reply: the text parts of `candidates[0]` (thought parts
skipped), usage in `usageMetadata`; a prompt refused outright has no candidates,
only `promptFeedback.blockReason`. Stream: SSE `data:` chunks in CRLF framing,
each with only the new text and the cumulative usage so far; there is no end
marker, so a body that ends before any `finishReason` is a broken stream.
Errors: `{"error": {"code", "message", "status", "details"}}`, where a bad key
can come back as a 400 and the wait hint of a 429 lives in `RetryInfo`.

Tools, function calls and results, images, JSON formats and the seed take
Gemini's own forms (`gemini_chat`); `functionCall` parts become our tool calls,
whole in a stream as in a reply, and their thought signatures come back in
`Response.vendor_state` for the next turn. Usage: `cachedContentTokenCount` is
the cached part of the prompt, and `thoughtsTokenCount` (not inside
`candidatesTokenCount`) is added to the completion and is its reasoning part.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from dispatcher.errors import (
    DispatcherError,
    InvalidRequest,
    VendorAuthError,
    VendorQuotaExceeded,
)
from dispatcher.models import FinishReason, Request, Role, ToolCallDelta, Usage
from dispatcher.vendors.auth import request_headers
from dispatcher.vendors.base import (
    Completion,
    HttpVendor,
    StreamDelta,
    StreamParser,
    path_segment,
)
from dispatcher.vendors.failures import (
    error_for_status,
    json_or_none,
    parse_duration_s,
    retry_after_s,
    summary,
)
from dispatcher.vendors.gemini_chat import PartReader, contents, format_config, tool_fields

__all__ = [
    "API_VERSION",
    "FINISH_REASONS",
    "GeminiVendor",
    "GenerateContentStreamParser",
    "classify_error",
    "classify_rpc_error",
    "finish_reason",
    "generate_content_body",
    "parse_generate_content",
]

# The path segment of the API version; v1 serves the same methods, but v1beta gets
# new fields first and is what Google's REST examples use.
API_VERSION = "v1beta"
# The fixed header Gemini reads the key from (the `?key=` alternative ends up in URL logs).
API_KEY_HEADER = "x-goog-api-key"

_CONTENT_FILTER = FinishReason.CONTENT_FILTER
FINISH_REASONS: dict[str, FinishReason] = {
    "STOP": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    "SAFETY": _CONTENT_FILTER,
    "RECITATION": _CONTENT_FILTER,
    "LANGUAGE": _CONTENT_FILTER,
    "BLOCKLIST": _CONTENT_FILTER,
    "PROHIBITED_CONTENT": _CONTENT_FILTER,
    "SPII": _CONTENT_FILTER,
    "IMAGE_SAFETY": _CONTENT_FILTER,
    "IMAGE_PROHIBITED_CONTENT": _CONTENT_FILTER,
    "IMAGE_RECITATION": _CONTENT_FILTER,
    "MODEL_ARMOR": _CONTENT_FILTER,
    # MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, TOO_MANY_TOOL_CALLS,
    # MALFORMED_RESPONSE, MISSING_THOUGHT_SIGNATURE, OTHER, FINISH_REASON_UNSPECIFIED
    # and any reason added later are errors: see `finish_reason`.
}


def finish_reason(raw: str | None, *, called_tool: bool = False) -> FinishReason:
    """Our finish reason for Gemini's; STOP with a function call is a tool call.

    Absent, unspecified and unknown reasons are errors (the text that arrived is kept).
    """
    if raw is None:
        return FinishReason.ERROR
    reason = FINISH_REASONS.get(raw, FinishReason.ERROR)
    if reason is FinishReason.STOP and called_tool:
        return FinishReason.TOOL_CALLS
    return reason


def generate_content_body(request: Request) -> dict[str, Any]:
    """The `generateContent` body for `request`; the model goes in the URL, not here.

    `extra_body` is merged last; a dict in it (say `generationConfig: {topK: 40}`)
    extends ours rather than replacing it, since most Gemini knobs live in one.

    Raises:
        InvalidRequest: an image Gemini cannot take, or tool-call arguments that are
            not a JSON object.
    """
    system = [m.text for m in request.messages if m.role is Role.SYSTEM]
    body: dict[str, Any] = {"contents": contents(request)}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    body.update(tool_fields(request))
    config: dict[str, Any] = {}
    for name, field in (
        ("temperature", "temperature"),
        ("max_tokens", "maxOutputTokens"),
        ("top_p", "topP"),
    ):
        value = getattr(request, name)
        if value is not None:
            config[field] = value
    if request.stop:
        config["stopSequences"] = list(request.stop)
    config.update(format_config(request))
    if config:
        body["generationConfig"] = config
    for key, value in request.extra_body.items():
        ours = body.get(key)
        body[key] = (
            {**ours, **value} if isinstance(ours, dict) and isinstance(value, dict) else value
        )
    return body


def parse_usage(data: Any) -> Usage:
    """Usage from `usageMetadata`; any count may be missing, and then it is 0.

    `promptTokenCount` already includes `cachedContentTokenCount`;
    `candidatesTokenCount` does not include `thoughtsTokenCount`.
    """
    if not isinstance(data, dict):
        return Usage()
    thoughts = int(data.get("thoughtsTokenCount") or 0)
    return Usage(
        prompt_tokens=int(data.get("promptTokenCount") or 0),
        # Thinking tokens are billed as output, so they count as completion tokens.
        completion_tokens=int(data.get("candidatesTokenCount") or 0) + thoughts,
        # Also counts tool-use prompt tokens, so it may exceed the sum.
        total_tokens=int(data.get("totalTokenCount") or 0),
        cached_prompt_tokens=int(data.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def _first_candidate(body: dict[str, Any]) -> dict[str, Any] | None:
    candidates = body.get("candidates")
    if not isinstance(candidates, list):
        return None
    return next(
        (c for c in candidates if isinstance(c, dict) and c.get("index", 0) == 0),
        None,
    )


def _parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    # A candidate stopped for SAFETY may come without any content.
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [part for part in parts or [] if isinstance(part, dict)]


def _block_reason(body: dict[str, Any]) -> str | None:
    feedback = body.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    return str(reason) if reason else None


def parse_generate_content(body: Any, vendor: str = "gemini") -> Completion:
    """A non-streamed `GenerateContentResponse`: its text, function calls and signatures."""
    if not isinstance(body, dict):
        body = {}
    usage = parse_usage(body.get("usageMetadata"))
    model = body.get("modelVersion")
    candidate = _first_candidate(body)
    if candidate is None:
        # No candidates at all: the prompt itself was refused (or nothing came back).
        blocked = _block_reason(body)
        return Completion(
            text="",
            finish_reason=_CONTENT_FILTER if blocked else FinishReason.ERROR,
            usage=usage,
            model=model,
            vendor_finish_reason=blocked,
        )
    reader = PartReader(vendor)
    text = reader.add(_parts(candidate), body.get("responseId"))
    raw = candidate.get("finishReason")
    return Completion(
        text=text,
        finish_reason=finish_reason(raw, called_tool=bool(reader.calls)),
        usage=usage,
        model=model,
        vendor_finish_reason=raw,
        tool_calls=tuple(reader.calls),
        vendor_state=reader.vendor_state(),
    )


class GenerateContentStreamParser(StreamParser):
    """`data: {GenerateContentResponse}` chunks until the body ends; no end marker.

    Each chunk holds only new text, `usageMetadata` is cumulative (the last one
    wins) and `finishReason` comes on the last chunk, so its absence at the end of
    the body is the only sign that the stream broke off. A `functionCall` part
    comes whole in one chunk, and goes out as one piece when it does; the calls, in
    order, and their thought signatures (which may come on a later part of their
    own) are handed over in the final delta.
    """

    def __init__(self, vendor: str) -> None:
        super().__init__(vendor)
        self.raw_finish: str | None = None
        self.blocked: str | None = None
        self.reader = PartReader(vendor)
        self.calls_told = 0  # how many of the reader's calls went out as pieces
        self.usage: Usage | None = None
        self.model: str | None = None

    def feed(self, item: ServerSentEvent) -> list[StreamDelta]:
        chunk = json_or_none(item.data)
        if not isinstance(chunk, dict):
            return []
        if "error" in chunk:
            raise in_stream_error(chunk["error"], self.vendor)
        self.model = chunk.get("modelVersion") or self.model
        if isinstance(chunk.get("usageMetadata"), dict):
            self.usage = parse_usage(chunk["usageMetadata"])
        self.blocked = _block_reason(chunk) or self.blocked
        candidate = _first_candidate(chunk)
        if candidate is None:
            return []
        text = self.reader.add(_parts(candidate), chunk.get("responseId"))
        if candidate.get("finishReason"):
            self.raw_finish = str(candidate["finishReason"])
        return self.text(text)

    def tool_call_pieces(self) -> tuple[ToolCallDelta, ...]:
        """The calls the last chunk brought, one whole piece each (Gemini sends no fragments)."""
        calls = self.reader.calls
        pieces = tuple(
            ToolCallDelta(index=index, id=call.id, name=call.name, arguments=call.arguments)
            for index, call in enumerate(calls[self.calls_told :], start=self.calls_told)
        )
        self.calls_told = len(calls)
        return pieces

    def finish(self) -> StreamDelta:
        if self.raw_finish is None and self.blocked is None:
            raise self.broken("a finishReason")
        if self.raw_finish is None:
            reason, raw = _CONTENT_FILTER, self.blocked
        else:
            reason = finish_reason(self.raw_finish, called_tool=bool(self.reader.calls))
            raw = self.raw_finish
        return StreamDelta(
            finish_reason=reason,
            usage=self.usage,
            vendor_finish_reason=raw,
            model=self.model,
            tool_calls=tuple(self.reader.calls),
            vendor_state=self.reader.vendor_state(),
        )


def in_stream_error(error: Any, vendor: str) -> DispatcherError:
    """A `data: {"error": ...}` chunk after HTTP 200, classified by the code it carries."""
    if not isinstance(error, dict):
        error = {"message": str(error)}
    code = error.get("code")
    status = code if isinstance(code, int) and code >= 400 else 500
    message = f"error inside the stream: {error.get('message') or '(no message)'}"
    return classify_rpc_error(status, {**error, "message": message}, httpx.Headers(), vendor)


def _details(error: dict[str, Any], type_suffix: str) -> list[dict[str, Any]]:
    details = error.get("details")
    return [
        d
        for d in (details if isinstance(details, list) else [])
        if isinstance(d, dict) and str(d.get("@type", "")).endswith(type_suffix)
    ]


def retry_delay_s(error: dict[str, Any]) -> float | None:
    """The wait a `google.rpc.RetryInfo` detail asks for (`retryDelay: "23s"`), if any."""
    for info in _details(error, "google.rpc.RetryInfo"):
        delay = info.get("retryDelay")
        if isinstance(delay, str):
            seconds = parse_duration_s(delay)
            if seconds is not None:
                return seconds
    return None


def is_daily_quota(error: dict[str, Any]) -> bool:
    """True when a violated quota is per day: waiting seconds or minutes will not help."""
    return any(
        "PerDay" in str(violation.get("quotaId", ""))
        for failure in _details(error, "google.rpc.QuotaFailure")
        for violation in failure.get("violations") or []
        if isinstance(violation, dict)
    )


def classify_rpc_error(
    status: int, error: dict[str, Any], headers: httpx.Headers, vendor: str
) -> DispatcherError:
    """The typed error for a parsed `{"code", "message", "status", "details"}` object.

    Auth failures come back as 400 or 403 as well as 401, so the RPC status and
    `details[].reason` decide before the HTTP status does.
    """
    message = str(error.get("message") or "")
    rpc_status = str(error.get("status") or "")
    details = error.get("details")
    reasons = {
        d.get("reason")
        for d in (details if isinstance(details, list) else [])
        if isinstance(d, dict)
    }
    if "API_KEY_INVALID" in reasons:
        return VendorAuthError(
            f"{vendor} refused the API key: {message} (check the key)",
            vendor=vendor,
            status_code=status,
        )
    if status == 400 and rpc_status == "FAILED_PRECONDITION":
        return VendorAuthError(
            f"{vendor} refused this project: {message} "
            "(enable billing, or call from a region where the free tier is offered)",
            vendor=vendor,
            status_code=status,
        )
    if status == 429 and is_daily_quota(error):
        return VendorQuotaExceeded(
            f"{vendor} daily quota exhausted: {message} "
            "(retrying today will not help; raise the quota or use another vendor)",
            vendor=vendor,
            status_code=status,
        )
    wait_s = retry_after_s(headers)
    if wait_s is None:
        wait_s = retry_delay_s(error)
    detail = f"{message} ({rpc_status})" if rpc_status and rpc_status not in message else message
    return error_for_status(status, detail, vendor=vendor, retry_after=wait_s)


def classify_error(status: int, headers: httpx.Headers, body: str, vendor: str) -> DispatcherError:
    """Gemini's `{"error": {...}}` bodies; anything else falls back on the status."""
    data = json_or_none(body)
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return classify_rpc_error(status, error, headers, vendor)
    return error_for_status(
        status, summary(body), vendor=vendor, retry_after=retry_after_s(headers)
    )


class GeminiVendor(HttpVendor):
    """generativelanguage.googleapis.com, or any base URL given in the configuration."""

    @property
    def base_url(self) -> str:
        """The configured base URL, without a trailing slash."""
        return (self.config.endpoint or "").rstrip("/")

    def auth(self) -> dict[str, str]:
        """The key header; Gemini's scheme is fixed, whatever `auth:` says."""
        if self.config.api_key is None:
            return {}
        return {API_KEY_HEADER: self.config.api_key.get_secret_value()}

    def model_url(self, model: str, method: str) -> str:
        """Where `method` of `model` is called; a `models/` prefix is dropped.

        The name is one escaped path segment: `?`, `#`, `/` and `..` in it stay in it.
        """
        name = path_segment(model.removeprefix("models/"))
        return f"{self.base_url}/{API_VERSION}/models/{name}:{method}"

    def build_request(self, request: Request, model: str, *, stream: bool) -> httpx.Request:
        method = "streamGenerateContent" if stream else "generateContent"
        try:
            body = generate_content_body(request)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, vendor=self.name) from None
        return httpx.Request(
            "POST",
            self.model_url(model, method),
            # Without alt=sse the stream is one JSON array, sent element by element.
            params={"alt": "sse"} if stream else None,
            headers=request_headers(self.config, self.auth()),
            content=json.dumps(body).encode(),
        )

    def parse_response(self, body: Any) -> Completion:
        return parse_generate_content(body, self.name)

    def stream_parser(self) -> StreamParser:
        return GenerateContentStreamParser(self.name)

    def classify_error(self, status: int, headers: httpx.Headers, body: str) -> DispatcherError:
        return classify_error(status, headers, body, self.name)

    def health_request(self) -> httpx.Request:
        return httpx.Request(
            "GET",
            f"{self.base_url}/{API_VERSION}/models",
            headers=request_headers(self.config, self.auth()),
        )
