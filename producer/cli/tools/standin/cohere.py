"""The Cohere v2 chat wire format, server side (`POST /v2/chat`).

Per the wire-format notes' section 6: replies carry `finish_reason`
(COMPLETE, MAX_TOKENS, STOP_SEQUENCE) and usage in two views (`tokens`,
`billed_units`); streams are named SSE events from `message-start` to
`message-end`, and an in-stream failure is a `message-end` with `finish_reason:
ERROR`; errors are `{"id", "message"}`, a 429 carries `retry-after`.
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

__all__ = ["CohereFormat"]


def _event(name: str, data: Json) -> bytes:
    return f"event: {name}\ndata: ".encode() + dumps({"type": name, **data}) + b"\n\n"


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
        return Call(
            model=body.get("model") or "command",
            messages=[
                (m["role"], text_of(m.get("content"), separator=""))
                for m in body.get("messages", [])
            ],
            stream=bool(body.get("stream")),
            max_tokens=body.get("max_tokens"),
            stop=as_list(body.get("stop_sequences")),
        )

    @staticmethod
    def _finish(reply: Reply) -> str:
        if reply.truncated:
            return "MAX_TOKENS"
        return "STOP_SEQUENCE" if reply.stopped else "COMPLETE"

    @staticmethod
    def _usage(reply: Reply) -> Json:
        counts = {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens}
        return {"billed_units": counts, "tokens": counts}

    def whole(self, call: Call, reply: Reply, request_id: str) -> Json:
        return {
            "id": request_id,
            "finish_reason": self._finish(reply),
            "message": {"role": "assistant", "content": [{"type": "text", "text": reply.text}]},
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
        failed = {"finish_reason": "ERROR", "error": "internal failure"}
        return Stream(
            opening=opening,
            events=events,
            closing=closing,
            error=_event("message-end", {"delta": failed}),
        )
