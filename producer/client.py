"""`Client`: submit a job, then read, wait for, stream or cancel it; batches; vendors.

A submit validates the request and its size (nothing is written when either
fails), asks the router for a route, and in one MULTI/EXEC writes the job
record, adds the job to its lane's ready set and, when none is pending, a bell
for the lane's queue, `llm.<vendor>` (`dispatcher.broker.ready_queue`; the message
names no prompt). With an idempotency key the write happens only if the key
names no job yet (`dispatcher.state.idempotency`). Messages go by task name, so this
package never imports `workers`; producer and workers meet in Redis.

`wait` blocks on the job's done list, so it wakes when the job's terminal
state is written, not on a polling interval. `stream` subscribes to the job's
channel, replays its buffer and follows it by the rules in `producer.streaming`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import redis

from dispatcher.broker.messages import RunJob
from dispatcher.broker.outbox import Outbox
from dispatcher.config.settings import Settings
from dispatcher.errors import DispatcherError
from dispatcher.models import (
    BatchItem,
    BatchRecord,
    CircuitState,
    JobRecord,
    JobStatus,
    Request,
    Response,
    Route,
    Stats,
    StreamEvent,
)
from dispatcher.routing.request_size import check_request_size
from dispatcher.routing.router import LiveState, route
from dispatcher.state.live_state import read_live_state
from dispatcher.state.redis_connect import redis_client as connect_redis
from dispatcher.state.status import VendorStatus, vendor_status
from dispatcher.state.store import JobStore
from dispatcher.state.vendor_detail import VendorDetail, configured_vendor, vendor_detail
from producer.batches import (
    DEFAULT_PROGRESS_INTERVAL_S,
    AlsoWrite,
    Batches,
    BatchSource,
    SendJobs,
    one_by_one,
)
from producer.celery_sender import CelerySender
from producer.checks import check_key, streaming_request, validated
from producer.connections import redis_pool_options
from producer.outcomes import response_of, timed_out
from producer.streaming import DEFAULT_START_TIMEOUT_S, StreamFollower, follow
from producer.unreachable import UNREACHABLE, reaching_redis, unavailable

__all__ = [
    "DEFAULT_START_TIMEOUT_S",
    "DEFAULT_WAIT_TIMEOUT_S",
    "LIVE_STATE_TTL_S",
    "Client",
    "Send",
]

Send = Callable[[RunJob, str, int], None]
"""Sends a message to a queue with a priority: `send(message, queue, priority)`."""

# Long enough for a slow vendor call with a few retries (vendor timeouts default to 60 s).
DEFAULT_WAIT_TIMEOUT_S = 300.0
# How stale the vendors' circuit states a submit routes by may be: one read a second.
LIVE_STATE_TTL_S = 1.0


class Client:
    """Submits jobs and reads them back; thread-safe, and cheap to keep for a process's life."""

    def __init__(
        self,
        settings: Settings,
        *,
        redis_client: redis.Redis | None = None,
        send: Send | None = None,
        send_jobs: SendJobs | None = None,
        rng: random.Random | None = None,
        live_state_ttl_s: float | None = None,
    ) -> None:
        self.settings = settings
        self._owns_redis = redis_client is None
        if redis_client is None:
            options = redis_pool_options()
            redis_client = connect_redis(settings, pool_timeout_s=options.pop("timeout"), **options)
        self.redis = redis_client
        self.store = JobStore(redis_client, settings.key_prefix, job_ttl_s=settings.job_ttl_s)
        # The default: a submit writes the job and its message in one MULTI/EXEC
        # (`dispatcher.broker.outbox`); with sent events on, Celery must send it.
        self._sender = CelerySender(settings) if send is None and settings.sent_events else None
        self.outbox = Outbox(
            redis_client,
            self.store.ready,
            publish=None if self._sender is None else self._sender.publish,
        )
        # A caller's `send` (a test's recorder) stands in for the outbox's job messages.
        self._send: Send = send or self.outbox.send_job
        self._in_write = send is None and self.outbox.in_transaction
        batch_outbox = self.outbox if self._in_write and send_jobs is None else None
        if send_jobs is None:
            send_jobs = self.outbox.send_jobs if send is None else one_by_one(send)
        self._rng = rng or random.Random()
        self._live: LiveState | None = None
        self._live_read_at = 0.0
        self._live_ttl_s = LIVE_STATE_TTL_S if live_state_ttl_s is None else live_state_ttl_s
        self._batches = Batches(
            self.store,
            settings,
            live_state=self._live_state,
            send_jobs=send_jobs,
            rng=self._rng,
            outbox=batch_outbox,
        )

    @classmethod
    def from_env(cls) -> Client:
        """A client configured from the environment and `LLMDISPATCH_CONFIG` (`Settings.load()`).

        Raises:
            ConfigError: the configuration is invalid; lists every problem.
        """
        return cls(Settings.load())

    # --- jobs ------------------------------------------------------------------------

    @reaching_redis
    def submit(
        self, request: Request | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> str:
        """Queue a job for `request` and return its id at once.

        The job joins its lane's ready set, with a bell for the lane's workers when
        none is pending (`dispatcher.broker.ready_queue`), in one MULTI/EXEC, one round
        trip: all or nothing. (With a custom `send`, or sent events on, the job gets
        a `dispatch.run_job` message of its own instead, sent after the write.)

        `idempotency_key`: a submit with a key that already names a job (within the
        job TTL) returns that job's id and writes nothing, whatever became of the
        first call: retry a failed submit with the same key, and nothing runs twice.

        Raises:
            InvalidRequest: the request is invalid (every problem listed), or its JSON is
                over `settings.max_request_bytes`; nothing was written.
            NoRoute: no configured vendor can take it; nothing was written.
            BudgetExceeded: every route is over the configured maximum cost.
            StoreUnavailable: Redis did not answer; it names the job id it tried to
                write and whether it may have been written (`may_have_been_written`).
        """
        if idempotency_key is not None:
            check_key(idempotency_key)
        checked, job_id = self._new_job(request)
        try:
            if idempotency_key is not None:
                # A retry gets its job back even if routing would now refuse the request.
                named = self.store.idempotency.named(idempotency_key)
                if named is not None:
                    return named
            chosen = route(checked, self.settings, self._live_state(), self._rng)
        except UNREACHABLE as exc:  # nothing was written yet
            url = self.settings.redis_url.get_secret_value()
            raise unavailable(url, exc, left="nothing was written", job_id=job_id) from exc

        def write(pipe: Any) -> None:
            self._write_job(pipe, job_id, checked, chosen)

        try:
            if idempotency_key is None:
                # One round trip, and MULTI/EXEC so a job is never half-written.
                pipe = self.redis.pipeline(transaction=True)
                write(pipe)
                pipe.execute()
            else:
                written = self.store.idempotency.write_once(idempotency_key, job_id, write)
                if written != job_id:
                    return written  # a racing submit with the same key won: its job
        except UNREACHABLE as exc:  # EXEC may have run before the reply was lost
            url = self.settings.redis_url.get_secret_value()
            left = "the job may have been queued all the same: get() it once Redis answers"
            raise unavailable(
                url, exc, left=left, job_id=job_id, may_have_been_written=True
            ) from exc
        if self._in_write:
            return job_id
        try:
            self._send(RunJob(job_id, vendor=chosen.vendor), chosen.queue, chosen.priority)
        except Exception as exc:
            marked = self._fail_unsent(job_id, chosen.queue, exc)
            if isinstance(exc, UNREACHABLE):
                left = (
                    "the job was written but not queued, and is marked failed"
                    if marked
                    else "the job was written but not queued: get() it once Redis answers"
                )
                url = self.settings.redis_url.get_secret_value()
                raise unavailable(
                    url, exc, left=left, job_id=job_id, may_have_been_written=True
                ) from exc
            raise
        return job_id

    @property
    def submits_in_one_write(self) -> bool:
        """True when a submit is one MULTI/EXEC (no message of its own sent after it)."""
        return self._in_write

    def _new_job(self, request: Request | Mapping[str, Any]) -> tuple[Request, str]:
        """The request, validated and within the size limit, and a new job id for it."""
        checked = validated(request)
        check_request_size(checked, self.settings.max_request_bytes)
        return checked, self.store.new_job_id()

    def _write_job(self, pipe: Any, job_id: str, request: Request, chosen: Route) -> None:
        """The job's writes into `pipe`, its queueing too when that is part of the write."""
        self.store.create(job_id, request, chosen, pipeline=pipe)
        if self._in_write:  # queued too: written whole or not at all
            self.outbox.queue_job(pipe, job_id, chosen.queue, chosen.priority)

    def _live_state_is_fresh(self) -> bool:
        return self._live is not None and time.monotonic() - self._live_read_at < self._live_ttl_s

    def _live_state(self) -> LiveState:
        """Every vendor's circuit, health and (when routing uses them) load and latency.

        Read at most every LIVE_STATE_TTL_S: the router then skips open circuits and
        unhealthy vendors, and ranks by load or latency when configured to.
        """
        now = time.monotonic()
        if self._live is None or now - self._live_read_at >= self._live_ttl_s:
            self._live = read_live_state(self.store, self.settings)
            self._live_read_at = now
        return self._live

    @reaching_redis
    def get(self, job_id: str) -> JobRecord:
        """The job's record as it is now.

        Raises:
            JobNotFound: no such job (never created, expired, or not a job id).
        """
        return self.store.get(job_id)

    @reaching_redis
    def wait(self, job_id: str, timeout_s: float = DEFAULT_WAIT_TIMEOUT_S) -> Response:
        """Block until the job ends and return its response.

        Raises:
            JobNotFound: no such job.
            JobCancelled: the job was cancelled.
            DispatcherError: the job failed; the typed error it failed with.
            TimeoutError: the job did not end within `timeout_s`; it keeps running.
        """
        if not timeout_s >= 0:  # NaN too: Redis would refuse it as a blocking timeout
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s}")
        record = self.store.get(job_id)
        if not record.status.is_terminal:
            if not self.store.wait_until_ended(job_id, timeout_s):
                raise timed_out(job_id, timeout_s)
            record = self.store.get(job_id)
        return response_of(record)

    @reaching_redis
    def send(
        self, request: Request | Mapping[str, Any], timeout_s: float = DEFAULT_WAIT_TIMEOUT_S
    ) -> Response:
        """Submit `request` and wait for its response (`submit` then `wait`)."""
        return self.wait(self.submit(request), timeout_s=timeout_s)

    @reaching_redis
    def stream(
        self, job_id: str, *, after: int = 0, start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    ) -> Generator[StreamEvent, None, None]:
        """The job's stream events with seq above `after`, as they come, ending with `done`.

        Subscribes first, then replays what was already published, then follows
        the channel (see `producer.streaming`). A job that does not stream yields
        its whole reply as one chunk once it ends. `text_of(events)` is the reply.
        Closing the iterator early unsubscribes.

        Raises:
            JobNotFound: no such job (raised at the call, not at the first event).
            DispatcherError: the job failed; the typed error, after the events before it.
            TimeoutError: the job was still queued, never started, after `start_timeout_s`.
        """
        record = self.store.get(job_id)
        follower = StreamFollower(
            job_id,
            after=after,
            start_timeout_s=start_timeout_s,
            streams=record.request.stream,
            now=time.monotonic(),
        )
        return follow(self.store, follower)

    @reaching_redis
    def send_streaming(
        self, request: Request | Mapping[str, Any], **stream_kwargs: Any
    ) -> Generator[StreamEvent, None, None]:
        """Submit `request` with `stream=True` now, and return its `stream(job_id, ...)`."""
        return self.stream(self.submit(streaming_request(request)), **stream_kwargs)

    @reaching_redis
    def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not ended; False when it already had.

        Raises:
            JobNotFound: no such job.
        """
        return self.store.cancel(job_id)

    # --- batches ----------------------------------------------------------------------

    @reaching_redis
    def submit_batch(
        self,
        source: BatchSource,
        *,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        also_write: AlsoWrite | None = None,
    ) -> str:
        """Queue a batch: a JSONL file's path, or a list of requests; returns its id at once.

        A file holds one request per line, in the OpenAI Batch input format
        (`custom_id`, `method`, `url`, `body`) or as plain request objects
        (optionally with a `custom_id`). All or nothing: see `producer.batches`.
        `idempotency_key` as for `submit`: the same key, the same batch.
        `also_write(pipeline, batch_id)` queues your own Redis commands into the
        MULTI/EXEC that makes the batch exist: they land with it or not at all.

        Raises:
            BatchFileError: every bad line or item, with its number; nothing was written.
        """
        if idempotency_key is not None:
            check_key(idempotency_key)
        return self._batches.submit(
            source, metadata=metadata, idempotency_key=idempotency_key, also_write=also_write
        )

    @reaching_redis
    def batch_status(self, batch_id: str) -> BatchRecord:
        """The batch's counts by state, times, tokens, cost and ETA now.

        Raises:
            BatchNotFound: no such batch (never created, expired, or not a batch id).
        """
        return self._batches.status(batch_id)

    @reaching_redis
    def wait_batch(
        self,
        batch_id: str,
        timeout_s: float | None = None,
        *,
        on_progress: Callable[[BatchRecord], Any] | None = None,
        interval_s: float = DEFAULT_PROGRESS_INTERVAL_S,
    ) -> BatchRecord:
        """Block until every item has ended, calling `on_progress(record)` every `interval_s`.

        Raises:
            BatchNotFound: no such batch.
            TimeoutError: items were still pending after `timeout_s`; they keep running.
        """
        return self._batches.wait(
            batch_id, timeout_s, on_progress=on_progress, interval_s=interval_s
        )

    @reaching_redis
    def batch_results(self, batch_id: str) -> list[BatchItem]:
        """Every item in input order: custom id, status, and response or typed error."""
        return list(self._batches.results(batch_id))

    @reaching_redis
    def iter_batch_results(self, batch_id: str) -> Iterator[BatchItem]:
        """`batch_results`, read a page at a time (for batches too large to hold at once)."""
        return self._batches.results(batch_id)

    @reaching_redis
    def cancel_batch(self, batch_id: str) -> int:
        """Cancel every item that has not ended; returns how many were.

        Queued items never run; a running item's result is discarded when it returns.
        A batch that had ended is left as it ended (0 is returned; `batch_status`
        says how it ended).

        Raises:
            BatchNotFound: no such batch.
        """
        return self._batches.cancel(batch_id)

    @reaching_redis
    def retry_failed(self, batch_id: str) -> int:
        """Resubmit the batch's failed items into the same batch; returns how many were."""
        return self._batches.retry_failed(batch_id)

    # --- configuration and statistics --------------------------------------------------

    @reaching_redis
    def stats(self) -> Stats:
        """Statistics of every job that ended, in total and per vendor."""
        return self.store.stats()

    @reaching_redis
    def vendor_status(self) -> list[VendorStatus]:
        """Each enabled vendor's status now: health, circuit, queue, in flight, traffic, limits."""
        return vendor_status(self.store, self.settings)

    def vendors(self) -> list[str]:
        """The names of the configured vendors that may receive traffic."""
        return list(self.settings.enabled_vendors())

    @reaching_redis
    def vendor(self, name: str) -> VendorDetail:
        """One vendor by name: its configuration (secrets masked), health, circuit and limits.

        Raises:
            VendorNotFound: no vendor has that name; the message lists the configured ones.
        """
        return vendor_detail(self.store, self.settings, name)

    @reaching_redis
    def reset_circuit(self, vendor: str) -> CircuitState:
        """Close `vendor`'s circuit breaker, for every worker and producer; the state it was in.

        Its count of failures in a row starts again from zero. Workers see the reset
        at their next claim, this client at its next submit, other producers within
        `LIVE_STATE_TTL_S`.

        Raises:
            VendorNotFound: no vendor has that name; the message lists the configured ones.
        """
        configured_vendor(self.settings, vendor)
        breaker = self.settings.circuit_breaker
        before = self.store.circuits.reset(vendor, breaker.reset_timeout_s)
        self._live = None  # route by the closed circuit from the next submit on
        return before

    # --- lifetime ------------------------------------------------------------------

    def close(self) -> None:
        """Release the broker and Redis connections this client opened."""
        if self._sender is not None:
            self._sender.close()
        if self._owns_redis:
            self.redis.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _fail_unsent(self, job_id: str, queue: str, cause: Exception) -> bool:
        """End a job whose message could not be sent, so it does not wait forever.

        Returns False when Redis would not take that either.
        """
        error = DispatcherError(f"could not queue the job on {queue}: {cause}", job_id=job_id)
        try:
            self.store.finish(job_id, JobStatus.FAILED, vendor=None, error=error)
        except redis.RedisError as exc:
            cause.add_note(f"job {job_id} could not be marked failed either: {exc}")
            return False
        return True
