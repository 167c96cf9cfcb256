"""`AsyncClient`: the client for asyncio applications.

Reading and waiting, the calls an app makes most and holds longest, use an
asyncio Redis client and never block the event loop: `wait` parks on the
job's done list like `Client.wait`, and `stream` follows the job's channel
through the asyncio client's own PubSub. Submitting, cancelling and statistics
reuse the thread-safe `Client` in a worker thread, so the job's layout and
its atomic transitions have one implementation.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from functools import partial
from types import TracebackType
from typing import Any, Self

import redis
import redis.asyncio

from dispatcher.config.settings import Settings
from dispatcher.models import (
    BatchItem,
    BatchRecord,
    CircuitState,
    JobRecord,
    Request,
    Response,
    Stats,
    StreamEvent,
)
from dispatcher.routing.router import LiveState, route
from dispatcher.state.redis_connect import async_redis_client
from dispatcher.state.status import VendorStatus
from dispatcher.state.store_async import AsyncJobReader
from dispatcher.state.vendor_detail import VendorDetail
from producer.batches import DEFAULT_PROGRESS_INTERVAL_S, AlsoWrite, BatchSource, WaitPace
from producer.checks import streaming_request
from producer.client import DEFAULT_WAIT_TIMEOUT_S, Client, Send
from producer.connections import redis_pool_options
from producer.outcomes import outcome_response, timed_out
from producer.pubsub_pool import PubSubPool
from producer.streaming import DEFAULT_START_TIMEOUT_S, StreamFollower, follow_async
from producer.unreachable import UNREACHABLE, reaching_redis, unavailable

__all__ = ["AsyncClient"]


class AsyncClient:
    """Submits jobs and reads them back from asyncio code."""

    def __init__(
        self,
        settings: Settings,
        *,
        redis_client: redis.asyncio.Redis | None = None,
        send: Send | None = None,
        rng: random.Random | None = None,
        sync_redis_client: redis.Redis | None = None,
    ) -> None:
        """Build the client.

        Args:
            redis_client: the asyncio Redis client for reads and waits; default: from settings.
            send: how messages are sent, as for `Client`; default: a Celery app.
            rng: the router's random draws, as for `Client`.
            sync_redis_client: the blocking client used (in a thread) to submit and cancel;
                default: from settings. It must reach the same Redis as `redis_client`.
        """
        self.settings = settings
        self._owns_redis = redis_client is None
        if redis_client is None:
            options = redis_pool_options()
            redis_client = async_redis_client(
                settings, pool_timeout_s=options.pop("timeout"), **options
            )
        self.redis = redis_client
        self.reader = AsyncJobReader(redis_client, settings.key_prefix)
        self.sync = Client(settings, redis_client=sync_redis_client, send=send, rng=rng)
        self._live_lock = asyncio.Lock()
        self._pubsubs = PubSubPool(redis_client)

    @classmethod
    def from_env(cls) -> AsyncClient:
        """A client configured from the environment and `LLMDISPATCH_CONFIG` (`Settings.load()`).

        Raises:
            ConfigError: the configuration is invalid; lists every problem.
        """
        return cls(Settings.load())

    @reaching_redis
    async def submit(
        self, request: Request | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> str:
        """Queue a job for `request` and return its id; see `Client.submit`.

        The usual submit (one MULTI/EXEC) is written through the asyncio client, on
        the loop; one with an idempotency key, or that sends a message of its own
        after the write, is `Client.submit` in a worker thread.
        """
        sync = self.sync
        if idempotency_key is not None or not sync.submits_in_one_write:
            return await asyncio.to_thread(
                partial(sync.submit, request, idempotency_key=idempotency_key)
            )
        checked, job_id = sync._new_job(request)
        url = self.settings.redis_url.get_secret_value()
        try:
            chosen = route(checked, self.settings, await self._live_state(), sync._rng)
        except UNREACHABLE as exc:  # nothing was written yet
            raise unavailable(url, exc, left="nothing was written", job_id=job_id) from exc
        try:
            # One round trip, and MULTI/EXEC so a job is never half-written.
            async with self.redis.pipeline(transaction=True) as pipe:
                sync._write_job(pipe, job_id, checked, chosen)
                await pipe.execute()
        except UNREACHABLE as exc:  # EXEC may have run before the reply was lost
            left = "the job may have been queued all the same: get() it once Redis answers"
            raise unavailable(
                url, exc, left=left, job_id=job_id, may_have_been_written=True
            ) from exc
        return job_id

    async def _live_state(self) -> LiveState:
        """`Client`'s live state, read in a worker thread when stale (at most once a second,
        by one caller while the others wait for it)."""
        if not self.sync._live_state_is_fresh():
            async with self._live_lock:
                if not self.sync._live_state_is_fresh():
                    return await asyncio.to_thread(self.sync._live_state)
        return self.sync._live_state()

    @reaching_redis
    async def get(self, job_id: str) -> JobRecord:
        """The job's record as it is now; see `Client.get`."""
        return await self.reader.get(job_id)

    @reaching_redis
    async def wait(self, job_id: str, timeout_s: float = DEFAULT_WAIT_TIMEOUT_S) -> Response:
        """Wait until the job ends and return its response; raises as `Client.wait` does."""
        if not timeout_s >= 0:  # NaN too: Redis would refuse it as a blocking timeout
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s}")
        # Only the outcome is read, never the whole record: a long prompt costs nothing here.
        outcome = await self.reader.outcome(job_id)
        if not outcome[0].is_terminal:
            if not await self.reader.wait_until_ended(job_id, timeout_s):
                raise timed_out(job_id, timeout_s)
            outcome = await self.reader.outcome(job_id)
        return outcome_response(job_id, *outcome)

    @reaching_redis
    async def send(
        self, request: Request | Mapping[str, Any], timeout_s: float = DEFAULT_WAIT_TIMEOUT_S
    ) -> Response:
        """Submit `request` and wait for its response."""
        return await self.wait(await self.submit(request), timeout_s=timeout_s)

    @reaching_redis
    async def stream(
        self, job_id: str, *, after: int = 0, start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    ) -> AsyncGenerator[StreamEvent, None]:
        """The job's stream events with seq above `after`, as they come; see `Client.stream`.

        Raises as `Client.stream` does, but at the first event (`JobNotFound` too).
        """
        follower = StreamFollower(
            job_id,
            after=after,
            start_timeout_s=start_timeout_s,
            streams=await self.reader.streams(job_id),
            now=time.monotonic(),
        )
        # aclosing: leaving this iterator early closes the inner one, and its PubSub, now.
        async with aclosing(follow_async(self.reader, follower, self._pubsubs)) as events:
            async for event in events:
                yield event

    @reaching_redis
    async def send_streaming(
        self, request: Request | Mapping[str, Any], **stream_kwargs: Any
    ) -> AsyncGenerator[StreamEvent, None]:
        """Submit `request` with `stream=True` and follow its stream; see `Client.send_streaming`.

        The job is submitted when iteration starts.
        """
        job_id = await self.submit(streaming_request(request))
        async with aclosing(self.stream(job_id, **stream_kwargs)) as events:
            async for event in events:
                yield event

    @reaching_redis
    async def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not ended; False when it already had; see `Client.cancel`."""
        return await asyncio.to_thread(self.sync.cancel, job_id)

    @reaching_redis
    async def stats(self) -> Stats:
        """Statistics of every job that ended, in total and per vendor."""
        return await asyncio.to_thread(self.sync.stats)

    @reaching_redis
    async def vendor_status(self) -> list[VendorStatus]:
        """Each enabled vendor's status now; see `Client.vendor_status`."""
        return await asyncio.to_thread(self.sync.vendor_status)

    def vendors(self) -> list[str]:
        """The names of the configured vendors that may receive traffic."""
        return self.sync.vendors()

    @reaching_redis
    async def vendor(self, name: str) -> VendorDetail:
        """One vendor: masked configuration, health, circuit and limits; see `Client.vendor`."""
        return await asyncio.to_thread(self.sync.vendor, name)

    @reaching_redis
    async def reset_circuit(self, vendor: str) -> CircuitState:
        """Close `vendor`'s circuit for everyone; its state before; see `Client.reset_circuit`."""
        return await asyncio.to_thread(self.sync.reset_circuit, vendor)

    # --- batches ----------------------------------------------------------------------

    @reaching_redis
    async def submit_batch(
        self,
        source: BatchSource,
        *,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        also_write: AlsoWrite | None = None,
    ) -> str:
        """Queue a batch (a JSONL file's path, or a list of requests); see `Client.submit_batch`.

        `also_write` runs in a worker thread, on the blocking client's pipeline.
        """
        return await asyncio.to_thread(
            partial(
                self.sync.submit_batch,
                source,
                metadata=metadata,
                idempotency_key=idempotency_key,
                also_write=also_write,
            )
        )

    @reaching_redis
    async def batch_status(self, batch_id: str) -> BatchRecord:
        """The batch's counts by state, times, tokens, cost and ETA; see `Client.batch_status`."""
        return await asyncio.to_thread(self.sync.batch_status, batch_id)

    @reaching_redis
    async def wait_batch(
        self,
        batch_id: str,
        timeout_s: float | None = None,
        *,
        on_progress: Callable[[BatchRecord], Any] | None = None,
        interval_s: float = DEFAULT_PROGRESS_INTERVAL_S,
    ) -> BatchRecord:
        """Wait until every item has ended, as `Client.wait_batch` does, without blocking the loop.

        `on_progress(record)` is called every `interval_s`, and awaited when it
        returns an awaitable. Wakes as soon as the last item ends.
        """
        pace = WaitPace(timeout_s, interval_s)
        while True:
            record = await self.batch_status(batch_id)
            if on_progress is not None and inspect.isawaitable(progress := on_progress(record)):
                await progress
            if record.done:
                return record
            await self.reader.wait_until_batch_finished(batch_id, pace.next_slice_s(record))

    @reaching_redis
    async def batch_results(self, batch_id: str) -> list[BatchItem]:
        """Every item in input order; see `Client.batch_results`."""
        return await asyncio.to_thread(self.sync.batch_results, batch_id)

    @reaching_redis
    async def cancel_batch(self, batch_id: str) -> int:
        """Cancel the items that have not ended (none if all had); see `Client.cancel_batch`."""
        return await asyncio.to_thread(self.sync.cancel_batch, batch_id)

    @reaching_redis
    async def retry_failed(self, batch_id: str) -> int:
        """Resubmit the batch's failed items in their places; see `Client.retry_failed`."""
        return await asyncio.to_thread(self.sync.retry_failed, batch_id)

    async def aclose(self) -> None:
        """Release the connections this client opened."""
        await self._pubsubs.aclose()
        await asyncio.to_thread(self.sync.close)
        if self._owns_redis:
            await self.redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
