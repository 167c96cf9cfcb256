"""The stand-in vendor server: every wire format on one asyncio loop, for tests, demos and benches.

One server answers every vendor on its documented paths, so one base URL serves
them all: OpenAI and OpenAI-compatible (`POST /v1/chat/completions`), Azure
(`/openai/deployments/{d}/chat/completions?api-version=...` and
`/openai/v1/chat/completions`), Anthropic (`/v1/messages`), Gemini
(`/v1beta/models/{model}:generateContent` and `:streamGenerateContent`), Ollama
(`/api/chat`), Cohere (`/v2/chat`) and Bedrock (`/model/{modelId}/converse` and
`/converse-stream`); the model lists health checks call (`/v1/models`,
`/openai/models`, `/openai/v1/models`, `/v1beta/models`, `/api/tags` and
Bedrock's `/foundation-models`); `GET /health` (never needs a key); and the
test controls of `api.StandInApi`.

With an expected API key set, a missing or wrong key is a 401 in the vendor's
shape. Server-wide, `MockBehaviour` paces replies and fails a share of them;
per request, the faults of `faults` do. Everything runs on one event loop:
handlers start no threads or tasks of their own and there is no access log by
default, so one core holds thousands of open connections.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
from collections.abc import Callable
from types import TracebackType
from typing import Self

from aiohttp import web

from producer.cli.tools.standin.anthropic import AnthropicFormat
from producer.cli.tools.standin.api import StandInApi
from producer.cli.tools.standin.bedrock import BedrockFormat
from producer.cli.tools.standin.cohere import CohereFormat
from producer.cli.tools.standin.gemini import GeminiFormat
from producer.cli.tools.standin.ollama import OllamaFormat
from producer.cli.tools.standin.openai import AzureFormat, OpenAIFormat
from producer.cli.tools.standin.options import StandInOptions

__all__ = [
    "DEFAULT_PORT",
    "StandInServer",
    "create_app",
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
# Unix has no limit worth keeping below this when the hard limit is unlimited.
OPEN_FILES_WHEN_UNLIMITED = 65_536
# The application key under which `create_app` keeps its `StandInApi`.
API_KEY = web.AppKey("standin_api", StandInApi)


def create_app(options: StandInOptions | None = None) -> web.Application:
    """The stand-in's application; serve it with `StandInServer` or `run`.

    `app[API_KEY]` is its `StandInApi`, for a test that reads its state directly.
    """
    api = StandInApi(options or StandInOptions())
    app = web.Application()
    app[API_KEY] = api
    openai, azure = OpenAIFormat(), AzureFormat()
    chat_routes = {
        "/v1/chat/completions": openai,
        "/openai/deployments/{deployment}/chat/completions": azure,
        "/openai/v1/chat/completions": azure,
        "/v1/messages": AnthropicFormat(),
        "/v1beta/models/{target}": GeminiFormat(),
        "/api/chat": OllamaFormat(),
        "/v2/chat": CohereFormat(),
        "/model/{model}/{action}": BedrockFormat(),
    }
    for path, wire in chat_routes.items():
        app.router.add_post(path, api.chat(wire))
    for path in (
        "/v1/models",
        "/openai/models",
        "/openai/v1/models",
        "/v1beta/models",
        "/api/tags",
    ):
        app.router.add_get(path, api.list_models)
    app.router.add_get("/foundation-models", api.foundation_models)
    app.router.add_get("/health", api.health)
    app.router.add_get("/__requests", api.dump_requests)
    app.router.add_post("/__reset", api.reset)
    app.router.add_post("/__down/{seconds}", api.set_down)
    app.router.add_post("/__models_status/{status}", api.set_models_status)
    app.on_shutdown.append(api.on_shutdown)
    return app


class StandInServer:
    """The stand-in on the running loop: `async with StandInServer() as server: server.url`.

    Port 0 (the default) picks a free port; `url` is the OpenAI base URL
    (`http://127.0.0.1:PORT/v1`), `root_url` the base URL of every other vendor.
    """

    def __init__(
        self, options: StandInOptions | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.options = options or StandInOptions()
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def root_url(self) -> str:
        """`http://HOST:PORT`: where `/health` lives, and every vendor but OpenAI's base URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL OpenAI clients take: `http://HOST:PORT/v1`."""
        return f"{self.root_url}/v1"

    async def start(self) -> None:
        """Listen; afterwards `port` is the bound port."""
        if self._runner is not None:
            raise RuntimeError("the stand-in server is already running")
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
    options: StandInOptions | None = None,
    *,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve until SIGINT or SIGTERM; `announce` gets one line with the URL once listening."""
    options = options or StandInOptions()
    if options.access_log:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    raise_open_file_limit()
    asyncio.run(_serve(host, port, options, announce))


async def _serve(
    host: str, port: int, options: StandInOptions, announce: Callable[[str], None]
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with StandInServer(options, host=host, port=port) as server:
        announce(
            f"stand-in vendor server listening on {server.url} "
            f"(every vendor's format under {server.root_url}; health: {server.root_url}/health); "
            "Ctrl-C stops it"
        )
        await stop.wait()
