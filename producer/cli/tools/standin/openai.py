"""The OpenAI Chat Completions wire format (OpenAI, Azure, OpenAI-compatible), server side.

Per the wire-format notes' sections 1 and 2: a chat body is checked the way the
real API checks it (a bad one is a 400 naming the `param`); replies are whole or
streamed (`data:` chunks, the `include_usage` chunk with empty `choices`, then
`data: [DONE]`; Azure opens with a filter-only chunk); errors are
`{"error": {"message", "type", "param", "code"}}`, and a 429 carries
`retry-after`, `retry-after-ms` and the rate-limit headers.
"""

from __future__ import annotations

import time
from typing import Any

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
    dumps,
    text_of,
)

__all__ = ["AzureFormat", "OpenAIFormat", "openai_error"]

_FINGERPRINT = "fp_standin"
_DONE = b"data: [DONE]\n\n"
# Most stop sequences the API takes.
MAX_STOP_SEQUENCES = 4


def openai_error(
    status: int,
    message: str,
    *,
    kind: str | None = None,
    code: str | None = None,
    param: str | None = None,
    retry_after_s: float = 1.0,
) -> web.Response:
    """An error in OpenAI's shape; the type and code follow the status unless given."""
    if kind is None:
        kind, code = {
            401: ("invalid_request_error", code or "invalid_api_key"),
            429: ("requests", code or "rate_limit_exceeded"),
        }.get(status, ("server_error" if status >= 500 else "invalid_request_error", code))
    headers = {}
    if status == 429:
        headers = {
            "retry-after": f"{retry_after_s:g}",
            "retry-after-ms": f"{retry_after_s * 1000:g}",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{retry_after_s:g}s",
        }
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _refuse(message: str, param: str | None = None) -> Refused:
    return Refused(openai_error(400, message, param=param))


def _max_tokens(body: Json) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _refuse(f"'{name}' must be a positive integer.", name)
        return value
    return None


def parse_chat(body: Json, default_model: str | None = None) -> Call:
    """The call a chat completions body makes; `default_model` stands in for a missing model.

    Raises:
        Refused: a body the real API would refuse, naming the offending parameter.
    """
    model = body.get("model") or default_model
    if not isinstance(model, str) or not model:
        raise _refuse("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _refuse("'messages' must be a non-empty array.", "messages")
    pairs: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _refuse(f"messages[{index}] must be an object with a 'role'.", "messages")
        pairs.append((message["role"], text_of(message.get("content"))))
    stream = body.get("stream") is True
    stream_options = body.get("stream_options")
    if stream_options is not None and not stream:
        raise _refuse(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else ([] if stop is None else stop)
    if (
        not isinstance(stops, list)
        or not all(isinstance(s, str) for s in stops)
        or len(stops) > MAX_STOP_SEQUENCES
    ):
        raise _refuse("'stop' must be a string or an array of at most 4 strings.", "stop")
    return Call(
        model=model,
        messages=pairs,
        stream=stream,
        max_tokens=_max_tokens(body),
        stop=stops,
        include_usage=isinstance(stream_options, dict)
        and stream_options.get("include_usage") is True,
    )


def _finish(reply: Reply) -> str:
    return "length" if reply.truncated else "stop"


def _usage(reply: Reply) -> Json:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.total_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _event(payload: Json) -> bytes:
    return b"data: " + dumps(payload) + b"\n\n"


class OpenAIFormat(WireFormat):
    """`POST /v1/chat/completions`: OpenAI and every OpenAI-compatible server."""

    vendor = "openai"
    # Azure opens its streams with a chunk that only carries the prompt filter's results.
    opens_with_filter_chunk = False

    def parse(self, request: web.Request, body: Json) -> Call:
        return parse_chat(body)

    def error(self, status: int, message: str, *, retry_after_s: float) -> web.Response:
        return openai_error(status, message, retry_after_s=retry_after_s)

    def injected(self, fault: Fault, retry_after_s: float) -> web.Response:
        if fault.quota:
            return openai_error(
                429,
                "You exceeded your current quota, please check your plan and billing "
                f"details. {INJECTED}",
                kind="insufficient_quota",
                code="insufficient_quota",
                retry_after_s=retry_after_s,
            )
        messages = {
            401: "Incorrect API key provided.",
            429: f"Rate limit reached for requests. Please try again in {retry_after_s:g}s.",
            503: "The engine is currently overloaded.",
        }
        status = fault.status or 500
        default = (
            "The server had an error while processing your request."
            if status >= 500
            else f"HTTP {status}."
        )
        message = f"{messages.get(status, default)} {INJECTED}"
        return openai_error(status, message, retry_after_s=retry_after_s)

    def whole(self, call: Call, reply: Reply, request_id: str) -> Json:
        return {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": _finish(reply),
                    "logprobs": None,
                    "message": {
                        "role": "assistant",
                        "content": reply.text,
                        "refusal": None,
                        "annotations": [],
                    },
                }
            ],
            "usage": _usage(reply),
            "system_fingerprint": _FINGERPRINT,
            "service_tier": "default",
        }

    def stream(self, call: Call, reply: Reply, request_id: str) -> Stream:
        head = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": call.model,
            "system_fingerprint": _FINGERPRINT,
        }
        # With include_usage every chunk but the usage one says "usage": null.
        no_usage: Json = {"usage": None} if call.include_usage else {}

        def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish,
            }
            return _event({**head, "choices": [choice], **no_usage})

        opening = chunk({"role": "assistant", "content": ""})
        if self.opens_with_filter_chunk:
            filters = {"id": "", "choices": [], "created": 0, "model": ""}
            opening = _event({**filters, "prompt_filter_results": [{"prompt_index": 0}]}) + opening
        closing = chunk({}, _finish(reply))
        if call.include_usage:
            closing += _event({**head, "choices": [], "usage": _usage(reply)})
        error = {
            "message": f"The server had an error while generating {INJECTED}.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
        return Stream(
            opening=opening,
            events=[chunk({"content": text}) for text in reply.chunks],
            closing=closing + _DONE,
            error=_event({"error": error}),
        )


class AzureFormat(OpenAIFormat):
    """Azure OpenAI: `/openai/deployments/{deployment}/chat/completions?api-version=...`
    (the deployment names the model) and `/openai/v1/chat/completions`."""

    vendor = "azure"
    opens_with_filter_chunk = True

    def parse(self, request: web.Request, body: Json) -> Call:
        deployment = request.match_info.get("deployment")
        if deployment is not None and "api-version" not in request.query:
            problem = {"error": {"code": "404", "message": "Resource not found"}}
            raise Refused(web.json_response(problem, status=404))
        return parse_chat(body, default_model=deployment)
