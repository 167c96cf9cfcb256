"""A mock OpenAI Chat Completions server for tests, demos and load tests, on one asyncio loop.

It answers in the wire format of `producer.cli.tools.mock_wire` (which also lists the
per-request faults of the `x-mock-fault` header), so `OpenAIVendor` and the
official SDK can both call it. Replies are `dispatcher.vendors.mock`'s: "echo: "
plus the last user message, one word per stream chunk unless told otherwise.

Routes: `POST /v1/chat/completions`, `GET /v1/models`, `GET /health` (never
needs a key). With an expected API key set, a missing or wrong `Bearer` key is a
401 in OpenAI's shape.

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
import logging
import random
import resource
import signal
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from aiohttp import web
from pydantic import ConfigDict, Field, SecretStr

from dispatcher.models import StrictModel
from dispatcher.vendors.mock import (
    FailureKind,
    MockBehaviour,
    compose_answer,
    split_into_chunks,
)
from producer.cli.tools.mock_wire import (
    FAULT_HEADER,
    TIMEOUT_FAULT_HANG_S,
    BadRequest,
    ChatCall,
    Fault,
    drop_connection,
    error_response,
    injected_error,
    parse_chat_body,
    parse_fault,
    send_stream,
    send_whole,
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


_FAULT_FOR_KIND: dict[FailureKind, Fault] = {
    "rate_limited": Fault(status=429),
    "server_error": Fault(status=500),
    "timeout": Fault(hang=True),
    "midstream_drop": Fault(drop=True),
}


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
            drop_connection(request)
            return web.Response()
        answer = compose_answer(call.messages, max_tokens=call.max_tokens, stop=call.stop)
        chunks = split_into_chunks(answer.text, behaviour.chunk_count)
        delay_s = fault.stall_s if fault.stall_s is not None else behaviour.chunk_delay_s
        await _pause(behaviour.time_to_first_token_s)
        if call.stream:
            return await send_stream(
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
        return await send_whole(request, call, answer, fault=fault, request_id=request_id)

    async def _admit(
        self, request: web.Request, request_id: str
    ) -> tuple[ChatCall, Fault] | web.Response:
        """The call and the fault to inject, or the error that refuses the call outright."""
        denied = self._check_key(request)
        if denied is not None:
            return denied
        behaviour = self.options.behaviour
        try:
            fault = parse_fault(request.headers.get(FAULT_HEADER, ""))
        except ValueError as exc:
            return error_response(400, str(exc), param=FAULT_HEADER)
        if fault is None:
            kind = behaviour.draw_failure(self._random)
            fault = _FAULT_FOR_KIND[kind] if kind is not None else Fault()
        await _pause(fault.slow_s)
        if fault.status is not None:
            return injected_error(fault, behaviour.retry_after_s, request_id)
        try:
            return parse_chat_body(await request.read()), fault
        except BadRequest as exc:
            return error_response(400, exc.message, param=exc.param)

    def _check_key(self, request: web.Request) -> web.Response | None:
        """None when the caller may proceed, else the 401 OpenAI would send."""
        if self._key is None:
            return None
        header = request.headers.get("Authorization", "")
        if not header:
            return error_response(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._key):
            return error_response(
                401,
                "Incorrect API key provided. Check the key the mock server was started with.",
                code="invalid_api_key",
            )
        return None


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
