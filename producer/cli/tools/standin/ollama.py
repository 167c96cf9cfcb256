"""The Ollama chat wire format, server side (`POST /api/chat`).

Per the wire-format notes' section 5: Ollama streams unless told `"stream": false`,
as NDJSON lines ending in one with `"done": true` and the counts; options carry
`num_predict` and `stop`; errors are `{"error": "..."}` and carry no wait hint.
"""

from __future__ import annotations

from aiohttp import web

from producer.cli.tools.standin.faults import Fault
from producer.cli.tools.standin.replies import (
    INJECTED,
    Call,
    Json,
    Reply,
    Stream,
    WireFormat,
    as_list,
    dumps,
    text_of,
)

__all__ = ["OllamaFormat"]

_CREATED_AT = "2026-11-01T10:00:00Z"


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
        return Call(
            model=body.get("model") or "llama",
            messages=[(m["role"], text_of(m.get("content"))) for m in body.get("messages", [])],
            stream=body.get("stream", True) is not False,  # Ollama streams unless told otherwise
            max_tokens=options.get("num_predict"),
            stop=as_list(options.get("stop")),
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
            "message": {"role": "assistant", "content": reply.text},
            **self._done(reply),
        }

    def stream(self, call: Call, reply: Reply, request_id: str) -> Stream:
        def line(text: str, **fields: object) -> bytes:
            message = {"role": "assistant", "content": text}
            return dumps({"model": call.model, "message": message, **fields}) + b"\n"

        return Stream(
            opening=b"",
            events=[line(text, done=False) for text in reply.chunks],
            closing=line("", **self._done(reply)),
            error=b'{"error":"model runner crashed"}\n',
            content_type="application/x-ndjson",
        )
