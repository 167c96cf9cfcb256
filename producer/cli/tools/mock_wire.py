"""The OpenAI Chat Completions wire format as the mock server speaks it, server side.

Requests in, replies out, per the notes' section 1: a chat body is checked the way
the real API checks it (a bad one is a 400 naming the `param`), replies are plain
or streamed (the `include_usage` chunk with empty `choices`, `data: [DONE]`), and
errors are `{"error": {"message", "type", "param", "code"}}`.

Faults, per request, in the `x-mock-fault` header (comma-separated):

    400..599          answer with that status (429 adds retry-after and rate-limit headers)
    quota             429 with code insufficient_quota (not retryable)
    slow:<ms>         wait that long before answering
    stall:<ms>        wait that long between stream chunks
    timeout           answer nothing for 10 minutes, then drop the connection
    midstream-drop    close the connection halfway through the body, with no [DONE]
    midstream-error   half the stream, then a `data: {"error": ...}` chunk
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from dispatcher.vendors.mock import MockAnswer

__all__ = [
    "FAULT_HEADER",
    "TIMEOUT_FAULT_HANG_S",
    "BadRequest",
    "ChatCall",
    "Fault",
    "drop_connection",
    "error_response",
    "injected_error",
    "parse_chat_body",
    "parse_fault",
    "send_stream",
    "send_whole",
]

FAULT_HEADER = "x-mock-fault"
# A "timeout" fault outlasts any sane client timeout (ours default to 60 s), yet ends.
TIMEOUT_FAULT_HANG_S = 600.0

_FINGERPRINT = "fp_mock"
_DONE = b"data: [DONE]\n\n"
_STREAM_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_STREAM_ERROR = (
    b'data: {"error":{"message":"The server had an error while generating (injected by '
    b'x-mock-fault).","type":"server_error","param":null,"code":null}}\n\n'
)


@dataclass(frozen=True)
class Fault:
    """What to do wrong with one request."""

    status: int | None = None
    quota: bool = False
    slow_s: float = 0.0
    stall_s: float | None = None
    hang: bool = False
    drop: bool = False
    stream_error: bool = False


_FAULT_VALUES = "400..599, quota, slow:<ms>, stall:<ms>, timeout, midstream-drop, midstream-error"


def parse_fault(value: str) -> Fault | None:
    """The fault an `x-mock-fault` header asks for; None when it is empty.

    Raises:
        ValueError: an unknown value; the message lists the accepted ones.
    """
    fault = Fault()
    items = [item.strip().lower() for item in value.split(",") if item.strip()]
    if not items:
        return None
    for item in items:
        name, _, argument = item.partition(":")
        if item.isdigit() and 400 <= int(item) <= 599:
            fault = replace(fault, status=int(item))
        elif item == "quota":
            fault = replace(fault, status=429, quota=True)
        elif name in ("slow", "stall") and argument:
            try:
                seconds = float(argument) / 1000.0
            except ValueError:
                seconds = -1.0
            if not 0 <= seconds <= TIMEOUT_FAULT_HANG_S:
                raise ValueError(f"{FAULT_HEADER} {item!r}: give milliseconds, as in {name}:250")
            fault = (
                replace(fault, slow_s=seconds)
                if name == "slow"
                else replace(fault, stall_s=seconds)
            )
        elif item == "timeout":
            fault = replace(fault, hang=True)
        elif item == "midstream-drop":
            fault = replace(fault, drop=True)
        elif item == "midstream-error":
            fault = replace(fault, stream_error=True)
        else:
            raise ValueError(f"unknown {FAULT_HEADER} value {item!r}; accepted: {_FAULT_VALUES}")
    return fault


class BadRequest(Exception):
    """A body the real API would refuse with a 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class ChatCall:
    """The parts of a chat completions body the mock answers from."""

    model: str
    messages: list[tuple[str, str]]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    stop: list[str]


def _message_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def parse_chat_body(raw: bytes) -> ChatCall:
    """The call a request body makes.

    Raises:
        BadRequest: a body the real API would refuse, naming the offending parameter.
    """
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest(
            "We could not parse the JSON body of your request. Send valid JSON."
        ) from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array.", "messages")
    pairs: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{index}] must be an object with a 'role'.", "messages")
        pairs.append((message["role"], _message_text(message.get("content"))))
    stream = body.get("stream") is True
    stream_options = body.get("stream_options")
    if stream_options is not None and not stream:
        raise BadRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    max_tokens = None
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"'{field}' must be a positive integer.", field)
        max_tokens = value
        break
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if stops is None:
        stops = []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > 4:
        raise BadRequest("'stop' must be a string or an array of at most 4 strings.", "stop")
    return ChatCall(
        model=model,
        messages=pairs,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        stop=stops,
    )


def error_response(
    status: int,
    message: str,
    *,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error in OpenAI's shape."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def injected_error(fault: Fault, retry_after_s: float, request_id: str) -> web.Response:
    """The error response a fault with a status asks for, headers and all."""
    status = fault.status or 500
    headers = {"x-request-id": request_id}
    why = f"(injected by {FAULT_HEADER} or the mock's failure rate)"
    if fault.quota:
        return error_response(
            429,
            f"You exceeded your current quota, please check your plan and billing details. {why}",
            kind="insufficient_quota",
            code="insufficient_quota",
            headers=headers,
        )
    if status == 429:
        headers.update(
            {
                "retry-after": f"{retry_after_s:g}",
                "retry-after-ms": f"{retry_after_s * 1000:g}",
                "x-ratelimit-limit-requests": "10000",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{retry_after_s:g}s",
            }
        )
        return error_response(
            429,
            f"Rate limit reached for requests {why}. Please try again in {retry_after_s:g}s.",
            kind="requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if status >= 500:
        return error_response(
            status,
            f"The server had an error while processing your request {why}.",
            kind="server_error",
            headers=headers,
        )
    return error_response(status, f"HTTP {status} {why}.", headers=headers)


def drop_connection(request: web.Request) -> None:
    """Close the socket at once, whatever was sent: the client sees a broken body."""
    if request.transport is not None:
        request.transport.abort()


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def send_whole(
    request: web.Request, call: ChatCall, answer: MockAnswer, *, fault: Fault, request_id: str
) -> web.StreamResponse:
    """The non-streamed reply (or its first half, for midstream-drop)."""
    body = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": call.model,
        "choices": [
            {
                "index": 0,
                "finish_reason": answer.finish_reason.value,
                "logprobs": None,
                "message": {
                    "role": "assistant",
                    "content": answer.text,
                    "refusal": None,
                    "annotations": [],
                },
            }
        ],
        "usage": _usage(answer),
        "system_fingerprint": _FINGERPRINT,
        "service_tier": "default",
    }
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "x-request-id": request_id}
    if not fault.drop:
        return web.Response(body=data, headers=headers)
    response = web.StreamResponse(headers=headers)
    response.content_length = len(data)
    await response.prepare(request)
    await response.write(data[: len(data) // 2])
    drop_connection(request)
    return response


async def send_stream(
    request: web.Request,
    call: ChatCall,
    answer: MockAnswer,
    *,
    chunks: list[str],
    fault: Fault,
    delay_s: float,
    request_id: str,
) -> web.StreamResponse:
    """The SSE reply, paced by `delay_s`, cut short for midstream faults."""
    head = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": call.model,
        "system_fingerprint": _FINGERPRINT,
    }
    # With include_usage every chunk but the usage one says "usage": null.
    no_usage: dict[str, Any] = {"usage": None} if call.include_usage else {}

    def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _event({**head, "choices": [choice], **no_usage})

    # Each write after the first waits one chunk delay; the role chunk rides with the first.
    writes = [chunk({"content": text}) for text in chunks] or [b""]
    writes[0] = chunk({"role": "assistant", "content": ""}) + writes[0]
    if fault.drop or fault.stream_error:
        writes = writes[: max(1, len(chunks) // 2)]
    if fault.stream_error:
        ending = _STREAM_ERROR
    elif fault.drop:
        ending = b""
    else:
        ending = chunk({}, answer.finish_reason.value)
        if call.include_usage:
            ending += _event({**head, "choices": [], "usage": _usage(answer)})
        ending += _DONE
    response = web.StreamResponse(headers={**_STREAM_HEADERS, "x-request-id": request_id})
    await response.prepare(request)
    if delay_s <= 0:
        writes, ending = [], b"".join(writes) + ending
    for index, data in enumerate(writes):
        if index:
            await asyncio.sleep(delay_s)
        await response.write(data)
    if fault.drop:
        await response.write(ending)
        drop_connection(request)
        return response
    # The last events and the end of the chunked body leave in one send.
    await response.write_eof(ending)
    return response


def _usage(answer: MockAnswer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
