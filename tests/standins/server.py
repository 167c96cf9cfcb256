"""Serve an aiohttp application on a free loopback port from a background thread.

`standin_server()` serves the one stand-in vendor (`producer.cli.tools.standin`) this way,
recording every call for `GET /__requests`, so a synchronous test can start it.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Self

from aiohttp import web

from producer.cli.tools.standin import StandInOptions, create_app

__all__ = ["ThreadedServer", "standin_server"]

START_TIMEOUT_S = 10.0
# At stop, how long a handler still running (a deliberately slow reply) may take to end
# before it is cancelled: well below START_TIMEOUT_S, the bound of the whole stop.
SHUTDOWN_TIMEOUT_S = 2.0


class ThreadedServer:
    """Runs `app` in its own thread and event loop, so any test loop can call it."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port: int | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = future.result(timeout=START_TIMEOUT_S)
        return self

    async def _start(self) -> int:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port: int = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(
            timeout=START_TIMEOUT_S
        )
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=START_TIMEOUT_S)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def standin_server(options: StandInOptions | None = None) -> ThreadedServer:
    """The stand-in vendor (every wire format), recording what it receives; not yet started."""
    options = options or StandInOptions()
    return ThreadedServer(create_app(options.model_copy(update={"record_requests": True})))
