"""One long-lived asyncio event loop per worker process, fed by the task threads.

Celery's thread pool gives each task a thread; the vendor call itself runs on
this loop, where hundreds of HTTP calls share one thread cheaply. A task
thread blocks on the call's future without holding the GIL. (asyncio.run()
per task would create and close a loop each time, and break pooled clients.)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["EventLoopThread"]

T = TypeVar("T")
START_TIMEOUT_S = 10.0


class EventLoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self, name: str = "llmd-vendor-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError("the vendor event loop did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run `coroutine` on the loop and wait for its result in the calling thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def stop(self) -> None:
        """Stop the loop, wait for its thread, and close the loop (its sockets with it)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(START_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()
