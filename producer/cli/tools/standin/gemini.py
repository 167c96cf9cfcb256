"""The Google Gemini wire format, server side (`POST /v1beta/models/{model}:{method}`).

Per the wire-format notes' section 4: roles are `user` and `model` (anything else
is a 400), `systemInstruction` holds the system text, streaming is
`:streamGenerateContent?alt=sse` with CRLF-separated events and cumulative
`usageMetadata`; errors are `{"error": {"code", "message", "status", "details"}}`,
a rejected key is a 400 `API_KEY_INVALID`, and a 429 says its wait in a
`RetryInfo` detail.
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
    cumulative_words,
    dumps,
)

__all__ = ["GeminiFormat"]

_RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_TYPE = "type.googleapis.com/google.rpc."


def _error(status: int, rpc: str, message: str, details: list[Json] | None = None) -> web.Response:
    body = {"error": {"code": status, "message": message, "status": rpc, "details": details or []}}
    return web.json_response(body, status=status)


def _event(data: Json) -> bytes:
    return b"data: " + dumps(data) + b"\r\n\r\n"


class GeminiFormat(WireFormat):
    """Gemini's generateContent and streamGenerateContent."""

    vendor = "gemini"

    def error(self, status: int, message: str, *, retry_after_s: float) -> web.Response:
        rpc = _RPC_STATUS.get(status) or ("UNAVAILABLE" if status >= 500 else "INVALID_ARGUMENT")
        details = []
        if status == 429:
            details = [{"@type": f"{_TYPE}RetryInfo", "retryDelay": f"{retry_after_s:g}s"}]
        return _error(status, rpc, message, details)

    def injected(self, fault: Fault, retry_after_s: float) -> web.Response:
        if fault.quota:
            violation = {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}
            details = [{"@type": f"{_TYPE}QuotaFailure", "violations": [violation]}]
            return _error(429, "RESOURCE_EXHAUSTED", f"Quota exceeded {INJECTED}", details)
        status = fault.status or 500
        if status == 401:
            details = [{"@type": f"{_TYPE}ErrorInfo", "reason": "API_KEY_INVALID"}]
            return _error(400, "INVALID_ARGUMENT", f"API key not valid. {INJECTED}", details)
        messages = {
            429: "Resource has been exhausted",
            500: "An internal error has occurred.",
            503: "The model is overloaded.",
        }
        message = f"{messages.get(status, f'HTTP {status}')} {INJECTED}"
        return self.error(status, message, retry_after_s=retry_after_s)

    def parse(self, request: web.Request, body: Json) -> Call:
        model, _, method = request.match_info["target"].partition(":")
        contents = body.get("contents") or []
        if any(c.get("role") not in ("user", "model", None) for c in contents):
            raise Refused(_error(400, "INVALID_ARGUMENT", "Please use a valid role: user, model."))
        stream = method == "streamGenerateContent"
        if stream and request.query.get("alt") != "sse":
            problem = "this stand-in streams only with alt=sse"
            raise Refused(_error(400, "INVALID_ARGUMENT", problem))
        config = body.get("generationConfig") or {}
        system = (body.get("systemInstruction") or {}).get("parts") or []
        return Call(
            model=model,
            messages=[("system", p.get("text", "")) for p in system]
            + [
                (
                    "user" if c.get("role", "user") == "user" else "assistant",
                    "".join(p.get("text", "") for p in c.get("parts", [])),
                )
                for c in contents
            ],
            stream=stream,
            max_tokens=config.get("maxOutputTokens"),
            stop=as_list(config.get("stopSequences")),
        )

    @staticmethod
    def _usage(reply: Reply, completion: int) -> Json:
        return {
            "promptTokenCount": reply.prompt_tokens,
            "candidatesTokenCount": completion,
            "totalTokenCount": reply.prompt_tokens + completion,
        }

    @staticmethod
    def _finish(reply: Reply) -> str:
        return "MAX_TOKENS" if reply.truncated else "STOP"

    def whole(self, call: Call, reply: Reply, request_id: str) -> Json:
        candidate = {
            "content": {"role": "model", "parts": [{"text": reply.text}]},
            "finishReason": self._finish(reply),
            "index": 0,
        }
        return {
            "candidates": [candidate],
            "usageMetadata": self._usage(reply, reply.completion_tokens),
            "modelVersion": call.model,
            "responseId": request_id,
        }

    def stream(self, call: Call, reply: Reply, request_id: str) -> Stream:
        events = []
        sent = cumulative_words(reply.chunks)
        for index, text in enumerate(reply.chunks):
            candidate: Json = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
            if index == len(reply.chunks) - 1:
                candidate["finishReason"] = self._finish(reply)
            data = {
                "candidates": [candidate],
                "usageMetadata": self._usage(reply, sent[index]),
                "modelVersion": call.model,
                "responseId": request_id,
            }
            events.append(_event(data))
        error = _event({"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}})
        return Stream(opening=b"", events=events, closing=b"", error=error)
