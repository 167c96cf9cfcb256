"""Everything a worker process builds once: settings, Redis, vendors, the runner.

Built at the edge (the first task in a process), from the environment and the
configuration file, then shared by every task thread of that process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from typing import Any

import httpx
import redis
import redis.asyncio
from httpx_aiohttp import HttpxAiohttpClient

from dispatcher import Request, Response, Settings
from dispatcher.celery_config import celery_priority
from dispatcher.health import HealthMonitor
from dispatcher.messages import RUN_JOB_TASK, RUN_JOBS_TASK, RunJob, RunJobs
from dispatcher.router import batch_queue_for
from dispatcher.runner import BUSY, JobRunner, Outcome, call_vendor
from dispatcher.store import JobStore
from dispatcher.store_async import AsyncStreamWriter
from dispatcher.vendors import Vendor, build_vendor
from dispatcher.vendors.base import http_timeout
from workers.http_transport import PairsAiohttpTransport
from workers.loop import EventLoopThread

__all__ = ["WORKER_VENDORS_ENV", "WorkerRuntime", "runtime"]

# httpx logs every request URL at INFO; a vendor authenticated by query
# parameter would have its key in the worker log.
logging.getLogger("httpx").setLevel(logging.WARNING)

# Which vendors this worker holds (comma-separated); `llmdispatch worker` sets it.
WORKER_VENDORS_ENV = "LLMDISPATCH_WORKER_VENDORS"
# Connections per vendor: enough for the calls one worker keeps in flight.
HTTP_CONNECTIONS_PER_VENDOR = 1_000
# redis-py 8 caps a pool at 100 connections; every task thread may need one.
REDIS_POOL_SIZE = 1_200
REDIS_SOCKET_TIMEOUT_S = 10.0


class WorkerRuntime:
    """The worker's shared state; `runner.run(message)` is what a task calls."""

    def __init__(self, settings: Settings, celery_app: Any, vendor_names: list[str]) -> None:
        self.settings = settings
        self.celery_app = celery_app
        self.redis = redis.Redis.from_url(
            settings.redis_url.get_secret_value(),
            max_connections=REDIS_POOL_SIZE,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
            health_check_interval=30,
        )
        self.store = JobStore(self.redis, settings.key_prefix, job_ttl_s=settings.job_ttl_s)
        self.loop = EventLoopThread()
        # Used only on the loop's thread: publishing stream chunks next to the vendor call.
        self.async_redis = redis.asyncio.Redis.from_url(
            settings.redis_url.get_secret_value(),
            max_connections=REDIS_POOL_SIZE,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
        )
        self.stream_writer = AsyncStreamWriter(self.async_redis, settings.key_prefix)
        self.vendors: dict[str, Vendor] = {
            name: build_vendor(name, config, self._http_client(config))
            for name, config in settings.enabled_vendors().items()
            if name in vendor_names
        }
        self.runner = JobRunner(
            settings, self.store, self.vendors, call=self.call_vendor, send=self.send
        )
        self._health: concurrent.futures.Future[None] | None = None
        # The batch lane's own threads: the items of a `dispatch.run_jobs` message run
        # here, at most `batch_concurrency` at once per process, so a batch draining
        # leaves the task threads (and the CPU) free for interactive jobs.
        self.batch_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.batch_concurrency, thread_name_prefix="llmd-batch"
        )

    def run_batch_message(self, message: RunJobs, *, redelivered: bool = False) -> list[Outcome]:
        """Run a batch message's items; then send the batch's next message for its vendor.

        The next one goes out before this one is acknowledged: should the worker die
        first, this message is delivered again (`redelivered`), runs what is left and
        sends it then. A copy that finds every item started by another copy leaves
        the next message to that copy, so copies do not multiply.
        """
        outcomes: list[Outcome] = []
        try:
            outcomes = self.run_many(message.messages(redelivered=redelivered))
            return outcomes
        finally:
            copy = bool(outcomes) and all(o.detail == BUSY for o in outcomes)
            if message.next_message >= 0 and not copy:
                job_ids = self.store.batches.message_items(
                    message.batch, message.vendor, message.next_message
                )
                if job_ids:
                    self.celery_app.send_task(
                        RUN_JOBS_TASK,
                        args=message.successor(job_ids).as_args(),
                        queue=batch_queue_for(message.vendor),
                    )

    def run_many(self, messages: list[RunJob]) -> list[Outcome]:
        """Run the messages concurrently on the batch lane's threads; their outcomes in order.

        Every message runs to its end even when another raised; the first error is
        raised after, so the task shows as failed (its items' records say why).
        """
        futures = [self.batch_pool.submit(self.runner.run, message) for message in messages]
        concurrent.futures.wait(futures)
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error
        return [future.result() for future in futures]

    @staticmethod
    def _http_client(config: Any) -> httpx.AsyncClient:
        """The vendor's pooled client: httpx's API, aiohttp's connection pool underneath.

        Measured (bench/RESULTS.md, queue_io): with hundreds of connections open,
        httpx's own pool walks every connection on each request and release; it
        cost 32.7 ms of worker CPU per call at 600 in flight, against 4.1 ms
        through the httpx-aiohttp transport with the same limits and timeouts.
        """
        limits = httpx.Limits(
            max_connections=HTTP_CONNECTIONS_PER_VENDOR,
            max_keepalive_connections=HTTP_CONNECTIONS_PER_VENDOR,
        )
        transport = PairsAiohttpTransport(limits=limits)
        return HttpxAiohttpClient(timeout=http_timeout(config), limits=limits, transport=transport)

    def call_vendor(
        self, vendor: Vendor, request: Request, model: str, message: RunJob
    ) -> Response:
        """Run the vendor call on the shared event loop; block this task thread until done.

        A streaming job's deltas are published from the loop as they arrive.
        """
        if not request.stream:
            return self.loop.run(call_vendor(vendor, request, model))
        writer = self.stream_writer
        job_id, attempt = message.job_id, message.attempt

        async def on_text(delta: str, emitted_at: float) -> bool:
            return writer.offer(job_id, attempt, delta, emitted_at)

        async def call_and_drain() -> Response:
            # The job's end (and its terminal stream event) is written after this
            # returns, so every chunk offered must be in Redis first.
            try:
                return await call_vendor(vendor, request, model, on_text)
            finally:
                await writer.drain(job_id, attempt)

        return self.loop.run(call_and_drain())

    def start_health_checks(self) -> bool:
        """Probe this worker's vendors on a schedule, on the event loop; False when off."""
        interval = self.settings.health_check_interval_s
        if interval <= 0 or not self.vendors or self._health is not None:
            return False
        monitor = HealthMonitor(self.store, self.vendors, interval)
        self._health = asyncio.run_coroutine_threadsafe(monitor.run_forever(), self.loop.loop)
        return True

    def send(self, message: RunJob, queue: str, priority: int, delay_s: float) -> None:
        """Queue the next message of a job (a retry, a fallback, a wait), in its lane."""
        self.celery_app.send_task(
            RUN_JOB_TASK,
            args=message.as_args(),
            queue=queue,
            countdown=delay_s or None,
            priority=celery_priority(priority),
        )


_lock = threading.Lock()
_runtime: WorkerRuntime | None = None


def runtime(celery_app: Any) -> WorkerRuntime:
    """This process's runtime, built on first use."""
    global _runtime  # noqa: PLW0603 - one runtime per worker process, built lazily
    with _lock:
        if _runtime is None:
            settings = Settings.load()
            names = [
                n.strip() for n in os.environ.get(WORKER_VENDORS_ENV, "").split(",") if n.strip()
            ] or list(settings.enabled_vendors())
            _runtime = WorkerRuntime(settings, celery_app, names)
        return _runtime
