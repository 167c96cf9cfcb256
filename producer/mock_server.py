"""A mock OpenAI Chat Completions server for tests, demos and load tests, on one asyncio loop.

It speaks the wire format of the notes' section 1 exactly (plain and streamed
replies, the `include_usage` chunk with empty `choices`, `data: [DONE]`, errors as
`{"error": {"message", "type", "param", "code"}}`), so `OpenAIVendor` and the
official SDK can both call it. Replies are `dispatcher.vendors.mock`'s: "echo: "
plus the last user message, one word per stream chunk unless told otherwise.

Routes: `POST /v1/chat/completions`, `GET /v1/models`, `GET /health` (never
needs a key). With an expected API key set, a missing or wrong `Bearer` key is a
401 in OpenAI's shape.

Faults, per request, in the `x-mock-fault` header (comma-separated):

    400..599          answer with that status (429 adds retry-after and rate-limit headers)
    quota             429 with code insufficient_quota (not retryable)
    slow:<ms>         wait that long before answering
    stall:<ms>        wait that long between stream chunks
    timeout           answer nothing for 10 minutes, then drop the connection
    midstream-drop    close the connection halfway through the body, with no [DONE]
    midstream-error   half the stream, then a `data: {"error": ...}` chunk

Server-wide, `MockBehaviour.failure_rate` injects its `failure_kinds` into
requests that carry no header: rate_limited -> 429, server_error -> 500,
timeout -> timeout, midstream_drop -> midstream-drop.

Everything runs on one event loop: handlers start no threads or tasks of their own and
there is no access log by default, so one core holds thousands of open connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import random
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from pydantic import ConfigDict, Field, SecretStr

from dispatcher.models import StrictModel
from dispatcher.vendors.mock import (
    FailureKind,
    MockAnswer,
    MockBehaviour,
    compose_answer,
    split_into_chunks,
)

__all__ = [
    "DEFAULT_PORT",
    "FAULT_HEADER",
    "Fault",
    "MockServer",
    "MockServerOptions",
    "create_app",
    "parse_fault",
    "raise_open_file_limit",
    "run",
]

DEFAULT_PORT = 8900
FAULT_HEADER = "x-mock-fault"
# A "timeout" fault outlasts any sane client timeout (ours default to 60 s), yet ends.
TIMEOUT_FAULT_HANG_S = 600.0
# Pending connections the kernel queues; the usual 128 drops SYNs when thousands connect at once.
LISTEN_BACKLOG = 4096
# In-flight requests get this long to finish when the server stops, and as long again
# once cancelled, so stopping takes at most about a second.
SHUTDOWN_TIMEOUT_S = 0.5
# Idle keep-alive connections are closed after this long, as web.run_app does.
KEEPALIVE_TIMEOUT_S = 75.0
# Listed by GET /v1/models; completions accept any model name and echo it back.
DEFAULT_MODELS = ("mock-echo",)
# Unix has no limit worth keeping below this when the hard limit is unlimited.
OPEN_FILES_WHEN_UNLIMITED = 65_536

_FINGERPRINT = "fp_mock"
_DONE = b"data: [DONE]\n\n"
_STREAM_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_STREAM_ERROR = (
    b'data: {"error":{"message":"The server had an error while generating (injected by '
    b'x-mock-fault).","type":"server_error","param":null,"code":null}}\n\n'
)


class MockServerOptions(StrictModel):
    """How the mock server paces, fails and authenticates."""

    model_config = ConfigDict(frozen=True)

    behaviour: MockBehaviour = Field(
        default_factory=MockBehaviour,
        description="time_to_first_token_s is the latency before the first byte.",
    )
    api_key: SecretStr | None = Field(
        default=None, description="The Bearer key callers must send; None: no auth."
    )
    access_log: bool = Field(default=False, description="Log every request (slows the server).")
    models: tuple[str, ...] = DEFAULT_MODELS


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

_FAULT_FOR_KIND: dict[FailureKind, Fault] = {
    "rate_limited": Fault(status=429),
    "server_error": Fault(status=500),
    "timeout": Fault(hang=True),
    "midstream_drop": Fault(drop=True),
}


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


class _BadRequest(Exception):
    """A body the real API would refuse with a 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class _ChatCall:
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


def _parse_chat_body(raw: bytes) -> _ChatCall:
    try:
        body = json.loads(raw)
    except ValueError:
        raise _BadRequest(
            "We could not parse the JSON body of your request. Send valid JSON."
        ) from None
    if not isinstance(body, dict):
        raise _BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("'messages' must be a non-empty array.", "messages")
    pairs: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _BadRequest(f"messages[{index}] must be an object with a 'role'.", "messages")
        pairs.append((message["role"], _message_text(message.get("content"))))
    stream = body.get("stream") is True
    stream_options = body.get("stream_options")
    if stream_options is not None and not stream:
        raise _BadRequest(
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
            raise _BadRequest(f"'{field}' must be a positive integer.", field)
        max_tokens = value
        break
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if stops is None:
        stops = []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > 4:
        raise _BadRequest("'stop' must be a string or an array of at most 4 strings.", "stop")
    return _ChatCall(
        model=model,
        messages=pairs,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        stop=stops,
    )


def _error(
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


def _injected_error(fault: Fault, retry_after_s: float, request_id: str) -> web.Response:
    status = fault.status or 500
    headers = {"x-request-id": request_id}
    why = f"(injected by {FAULT_HEADER} or the mock's failure rate)"
    if fault.quota:
        return _error(
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
        return _error(
            429,
            f"Rate limit reached for requests {why}. Please try again in {retry_after_s:g}s.",
            kind="requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if status >= 500:
        return _error(
            status,
            f"The server had an error while processing your request {why}.",
            kind="server_error",
            headers=headers,
        )
    return _error(status, f"HTTP {status} {why}.", headers=headers)


def _drop_connection(request: web.Request) -> None:
    """Close the socket at once, whatever was sent: the client sees a broken body."""
    if request.transport is not None:
        request.transport.abort()


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def _pause(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


class _MockApi:
    """The handlers, and the state they share: options, the failure dice, request ids."""

    def __init__(self, options: MockServerOptions) -> None:
        self.options = options
        behaviour = options.behaviour
        self._random = random.Random("mock-server" if behaviour.seed is None else behaviour.seed)
        self._ids = itertools.count(1)
        self._stopping = asyncio.Event()
        key = options.api_key
        self._key = key.get_secret_value().encode() if key is not None else None

    async def on_shutdown(self, app: web.Application) -> None:
        """Release requests hung by a timeout fault, so stopping is quick."""
        self._stopping.set()

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def list_models(self, request: web.Request) -> web.Response:
        denied = self._check_key(request)
        if denied is not None:
            return denied
        created = int(time.time())
        data = [
            {"id": model, "object": "model", "created": created, "owned_by": "llmdispatch-mock"}
            for model in self.options.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        request_id = f"req_mock_{next(self._ids)}"
        admitted = await self._admit(request, request_id)
        if isinstance(admitted, web.Response):
            return admitted
        call, fault = admitted
        behaviour = self.options.behaviour
        if fault.hang:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), TIMEOUT_FAULT_HANG_S)
            _drop_connection(request)
            return web.Response()
        answer = compose_answer(call.messages, max_tokens=call.max_tokens, stop=call.stop)
        chunks = split_into_chunks(answer.text, behaviour.chunk_count)
        delay_s = fault.stall_s if fault.stall_s is not None else behaviour.chunk_delay_s
        await _pause(behaviour.time_to_first_token_s)
        if call.stream:
            return await _send_stream(
                request,
                call,
                answer,
                chunks=chunks,
                fault=fault,
                delay_s=delay_s,
                request_id=request_id,
            )
        # A whole reply takes as long as streaming it would.
        await _pause(delay_s * max(0, len(chunks) - 1))
        return await _send_whole(request, call, answer, fault=fault, request_id=request_id)

    async def _admit(
        self, request: web.Request, request_id: str
    ) -> tuple[_ChatCall, Fault] | web.Response:
        """The call and the fault to inject, or the error that refuses the call outright."""
        denied = self._check_key(request)
        if denied is not None:
            return denied
        behaviour = self.options.behaviour
        try:
            fault = parse_fault(request.headers.get(FAULT_HEADER, ""))
        except ValueError as exc:
            return _error(400, str(exc), param=FAULT_HEADER)
        if fault is None:
            kind = behaviour.draw_failure(self._random)
            fault = _FAULT_FOR_KIND[kind] if kind is not None else Fault()
        await _pause(fault.slow_s)
        if fault.status is not None:
            return _injected_error(fault, behaviour.retry_after_s, request_id)
        try:
            return _parse_chat_body(await request.read()), fault
        except _BadRequest as exc:
            return _error(400, exc.message, param=exc.param)

    def _check_key(self, request: web.Request) -> web.Response | None:
        """None when the caller may proceed, else the 401 OpenAI would send."""
        if self._key is None:
            return None
        header = request.headers.get("Authorization", "")
        if not header:
            return _error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._key):
            return _error(
                401,
                "Incorrect API key provided. Check the key the mock server was started with.",
                code="invalid_api_key",
            )
        return None


async def _send_whole(
    request: web.Request, call: _ChatCall, answer: MockAnswer, *, fault: Fault, request_id: str
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
    _drop_connection(request)
    return response


async def _send_stream(
    request: web.Request,
    call: _ChatCall,
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
        _drop_connection(request)
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


def create_app(options: MockServerOptions | None = None) -> web.Application:
    """The mock server's application; serve it with `MockServer` or `run`."""
    api = _MockApi(options or MockServerOptions())
    app = web.Application()
    app.router.add_post("/v1/chat/completions", api.chat_completions)
    app.router.add_get("/v1/models", api.list_models)
    app.router.add_get("/health", api.health)
    app.on_shutdown.append(api.on_shutdown)
    return app


class MockServer:
    """The mock server on the running loop: `async with MockServer() as server: server.url`.

    Port 0 (the default) picks a free port; `url` is the OpenAI base URL
    (`http://127.0.0.1:PORT/v1`) to give a vendor's `base_url`.
    """

    def __init__(
        self, options: MockServerOptions | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.options = options or MockServerOptions()
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def root_url(self) -> str:
        """`http://HOST:PORT`, where `/health` lives."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL OpenAI clients take: `http://HOST:PORT/v1`."""
        return f"{self.root_url}/v1"

    async def start(self) -> None:
        """Listen; afterwards `port` is the bound port."""
        if self._runner is not None:
            raise RuntimeError("the mock server is already running")
        access_log = logging.getLogger("aiohttp.access") if self.options.access_log else None
        runner = web.AppRunner(
            create_app(self.options),
            access_log=access_log,
            # A client that hangs up cancels its handler: a dropped stream frees its slot.
            handler_cancellation=True,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            keepalive_timeout=KEEPALIVE_TIMEOUT_S,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, backlog=LISTEN_BACKLOG)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening and close every connection; requests still running are cut within ~1 s."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


def raise_open_file_limit() -> int:
    """Lift the open-file limit to the hard limit (a socket is a file); returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_WHEN_UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def run(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    options: MockServerOptions | None = None,
    *,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve until SIGINT or SIGTERM; `announce` gets one line with the URL once listening."""
    options = options or MockServerOptions()
    if options.access_log:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    raise_open_file_limit()
    asyncio.run(_serve(host, port, options, announce))


async def _serve(
    host: str, port: int, options: MockServerOptions, announce: Callable[[str], None]
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with MockServer(options, host=host, port=port) as server:
        announce(
            f"mock OpenAI server listening on {server.url} "
            f"(health: {server.root_url}/health); Ctrl-C stops it"
        )
        await stop.wait()
