"""Vendor calls on one event loop per worker process, reached from Celery's task threads.

Celery's thread pool gives each task a thread; the vendor calls themselves run
on one asyncio loop in a thread of its own, where hundreds of HTTP calls share
a thread cheaply, and a task thread blocks on its calls without holding the GIL.
The hand-over is anyio's blocking portal (anyio comes with httpx), served from a
daemon thread of ours, so that a worker never waits for the loop at exit.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal

from dispatcher import Request, Response, Settings, ToolCallDelta
from dispatcher.broker.messages import RunJob
from dispatcher.runner.job_runner import VendorCall, call_vendor
from dispatcher.state.store_async import AsyncStreamWriter
from dispatcher.vendors import Vendor

__all__ = ["VendorCalls"]

Ended = queue.SimpleQueue[tuple[int, Response | Exception]]
START_TIMEOUT_S = 10.0


class VendorCalls:
    """Runs vendor calls on the worker's event loop; `call_vendor`/`call_many` are the
    runner's `call` and `call_many`."""

    def __init__(self, settings: Settings, stream_writer: AsyncStreamWriter) -> None:
        self.settings = settings
        self.stream_writer = stream_writer
        self._portal: BlockingPortal | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="llmd-vendor-loop", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self._portal is None:
            raise RuntimeError("the vendor event loop did not start")
        self.portal: BlockingPortal = self._portal

    def _serve(self) -> None:
        anyio.run(self._hold_portal, backend="asyncio")

    async def _hold_portal(self) -> None:
        async with BlockingPortal() as portal:
            self._portal = portal
            self._ready.set()
            await portal.sleep_until_stopped()

    def call_vendor(
        self, vendor: Vendor, request: Request, model: str, message: RunJob
    ) -> Response:
        """Run the vendor call on the loop; block this task thread until it is done.

        A streaming job's deltas are published from the loop as they arrive.
        """
        return self.portal.call(self._vendor_call, vendor, request, model, message)

    def call_many(self, calls: Sequence[VendorCall]) -> Iterator[tuple[int, Response | Exception]]:
        """Start every call on the loop at once; yield each reply, by position, as it ends.

        One hand-over to the loop for all of them, not one per call: a batch
        message's items run concurrently without a thread each.
        """
        if not calls:
            return
        ended: Ended = queue.SimpleQueue()
        self.portal.start_task_soon(self._run_all, calls, ended)
        for _ in calls:
            yield ended.get()

    async def _run_all(self, calls: Sequence[VendorCall], ended: Ended) -> None:
        async with anyio.create_task_group() as group:
            for position, call in enumerate(calls):
                group.start_soon(self._run_one, position, call, ended)

    async def _run_one(self, position: int, call: VendorCall, ended: Ended) -> None:
        try:
            ended.put((position, await self._vendor_call(*call)))
        except Exception as exc:
            ended.put((position, exc))
        except BaseException as exc:  # cancelled, or the process is going down
            ended.put((position, RuntimeError(f"the vendor call ended: {exc!r}")))
            raise

    async def _vendor_call(
        self, vendor: Vendor, request: Request, model: str, message: RunJob
    ) -> Response:
        """The vendor call for a message.

        A streaming job's deltas are published as they arrive, and all of them are
        in Redis before the call returns (the job's end, with its terminal stream
        event, is written after).
        """
        if not request.stream:
            return await call_vendor(vendor, request, model, deadline=message.deadline)
        writer = self.stream_writer
        job_id, attempt = message.job_id, message.attempt

        async def on_text(delta: str, emitted_at: float) -> bool:
            return writer.offer(job_id, attempt, delta, emitted_at)

        async def on_tool_calls(pieces: Sequence[ToolCallDelta], emitted_at: float) -> bool:
            return writer.offer(job_id, attempt, "", emitted_at, pieces)

        try:
            return await call_vendor(
                vendor,
                request,
                model,
                on_text,
                on_tool_calls=on_tool_calls,
                max_stream_s=self.settings.max_stream_s,
                deadline=message.deadline,
            )
        finally:
            await writer.drain(job_id, attempt)

    def start(self, function: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> Future[None]:
        """Run `function(*args)` on the loop in the background; its future."""
        return self.portal.start_task_soon(function, *args)
