"""The Anthropic Messages wire format, server side (`POST /v1/messages`).

Per the wire-format notes' section 3: `anthropic-version` and `max_tokens` are
required, `system` is a top-level field (a `system` role in `messages` is a 400),
and under `anthropic-version: 2026-10-21` any sampling parameter is a 400.
Streams are named SSE events (`message_start` ... `message_stop`, usage
cumulative in `message_delta`); errors are `{"type": "error", "error": {...}}`,
and overload is a 529.
"""

from __future__ import annotations

from aiohttp import web

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


def _event(name: str, data: Json) -> bytes:
    return f"event: {name}\ndata: ".encode() + dumps({"type": name, **data}) + b"\n\n"


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
        return Call(
            model=body.get("model") or "claude",
            messages=([("system", system_text)] if system_text else [])
            + [(m["role"], text_of(m.get("content"))) for m in messages],
            stream=bool(body.get("stream")),
            max_tokens=body["max_tokens"],
            stop=as_list(body.get("stop_sequences")),
        )

    @staticmethod
    def _reason(reply: Reply) -> str:
        if reply.truncated:
            return "max_tokens"
        return "stop_sequence" if reply.stopped else "end_turn"

    def whole(self, call: Call, reply: Reply, request_id: str) -> Json:
        return {
            "id": f"msg_{request_id}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [{"type": "text", "text": reply.text}],
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
        opening = (
            _event("message_start", {"message": message})
            + _event(
                "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
            )
            + _event("ping", {})
        )
        events = [
            _event(
                "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}}
            )
            for text in reply.chunks
        ]
        closing = (
            _event("content_block_stop", {"index": 0})
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
