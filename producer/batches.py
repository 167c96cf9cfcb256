"""Batches from the producer's side: submit thousands of requests at once, follow, fetch.

`submit_batch` validates every request (all or nothing: a bad line or item is
reported with its number and nothing is written), routes each one, writes the
batch and every item's job in one atomic round trip, and sends the items out
many to a message (`RunJobs`, `dispatch.run_jobs`) on each vendor's batch lane,
`llm.<vendor>.batch`. Workers run the items of a message concurrently; every
item keeps its own record, retries, fallbacks and result. Interactive jobs go
to `llm.<vendor>`, which workers take from in turn with the batch lane, so they
never wait behind a batch.

Cancelling a batch ends every item that has not ended as cancelled: queued
items never run; an item already running has its vendor call's result
discarded when it comes back (the call may still be billed by the vendor).
Cancelling a batch that has ended changes nothing.
`retry_failed` puts a new job in the place of each failed item, in the same
batch, and sends it out again.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from dispatcher.broker.messages import BATCH_MESSAGE_ITEMS, RunJob, RunJobs
from dispatcher.broker.outbox import Outbox
from dispatcher.config.settings import Settings
from dispatcher.errors import DispatcherError
from dispatcher.models import BatchItem, BatchRecord, JobStatus, Request, Route
from dispatcher.routing.router import LiveState, batch_queue_for, route
from dispatcher.state.batches import NewItem, Replacement
from dispatcher.state.store import JobStore
from producer.batch_files import (
    BatchFileError,
    BatchLimits,
    BatchLine,
    read_batch_file,
    requests_as_lines,
)
from producer.unreachable import UNREACHABLE, unavailable

__all__ = [
    "DEFAULT_PROGRESS_INTERVAL_S",
    "BatchSource",
    "Batches",
    "SendJobs",
    "WaitPace",
    "one_by_one",
]
# How often `wait_batch` reports progress by default.
DEFAULT_PROGRESS_INTERVAL_S = 1.0

SendJobs = Callable[[RunJobs, str], None]
"""Sends a batch message to a queue: `send_jobs(message, queue)`."""
BatchSource = str | os.PathLike[str] | Sequence[Request | Mapping[str, Any]]
"""A JSONL file's path, or a list of requests (dicts may carry a `custom_id`)."""

AlsoWrite = Callable[[Any, str], None]
"""Queues a caller's commands (given the pipeline and the batch id) into a batch's last write."""


class Batches:
    """The batch operations of a `Client` (which hands them its store, router state and sender)."""

    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        *,
        live_state: Callable[[], LiveState],
        send_jobs: SendJobs,
        rng: random.Random,
        outbox: Outbox | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self._live_state = live_state
        self._send_jobs = send_jobs
        self._rng = rng
        # When set, a batch's first messages go in the MULTI/EXEC that writes it.
        self._outbox = outbox

    # --- submitting ------------------------------------------------------------------

    def submit(
        self,
        source: BatchSource,
        *,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        also_write: AlsoWrite | None = None,
    ) -> str:
        """Queue every request of `source` as one batch; returns the batch id at once.

        `idempotency_key`: a key that already names a batch returns that batch's id,
        and nothing is written (see `Client.submit`). `also_write(pipeline, batch_id)`
        queues the caller's own commands into the MULTI/EXEC that makes the batch
        exist, so they land with it or not at all.

        Raises:
            BatchFileError: a line or item is invalid (bad JSON, not UTF-8, missing or
                duplicate custom_id, an invalid request), over the maximum request
                size, or no vendor can take it; every one is listed with its number,
                and nothing was written.
            StoreUnavailable: Redis did not answer; names the batch id it tried to write.
        """
        if idempotency_key is not None:
            named = self.store.idempotency.named(idempotency_key)
            if named is not None:
                return named
        limits = BatchLimits(
            max_items=self.settings.max_batch_items,
            max_file_bytes=self.settings.max_batch_bytes,
            max_request_bytes=self.settings.max_request_bytes,
        )
        lines = _lines_of(source, limits)
        routes = self._routes(lines, unit="line" if _is_path(source) else "item")
        batch_id = self.store.batches.new_batch_id()
        items = [
            NewItem(self.store.new_job_id(), line.custom_id, line.request, chosen)
            for line, chosen in zip(lines, routes, strict=True)
        ]
        messages = _plan(batch_id, [(item.job_id, item.route.vendor) for item in items])
        # The first `window` messages per vendor; each sends its successor when done.
        window = self.settings.batch_window
        first = [
            replace(m, next_message=n + window, window=window)
            for n, m in _numbered(messages)
            if n < window
        ]
        try:
            written = self.store.batches.create(
                batch_id,
                items,
                messages={(m.vendor, n): m.job_ids for (n, m) in _numbered(messages)},
                metadata=metadata,
                window=window,
                also=partial(self._publishing, first, also_write, batch_id),
                idempotency_key=idempotency_key,
            )
            if written != batch_id:
                return written  # a racing submit with the same key made the batch
            if self._outbox is None:
                self._send(batch_id, first, messages, window)
        except UNREACHABLE as exc:
            # The batch comes into being in its last MULTI/EXEC (with its first messages,
            # by default), which may have run before the reply was lost; with a custom
            # sender, some of its messages may be out and the rest not.
            left = (
                f"batch {batch_id} may have been written: once Redis answers, "
                f"batch_status('{batch_id}') says whether, and cancel_batch('{batch_id}') ends it"
            )
            url = self.settings.redis_url.get_secret_value()
            raise unavailable(
                url, exc, left=left, batch_id=batch_id, may_have_been_written=True
            ) from exc
        return batch_id

    def _routes(self, lines: Sequence[BatchLine], *, unit: str) -> list[Route]:
        """A route for every line, or a `BatchFileError` naming every line no vendor takes."""
        live = self._live_state()
        routes: list[Route] = []
        problems: list[tuple[int, str]] = []
        for line in lines:
            try:
                chosen = route(line.request, self.settings, live, self._rng)
                # The record says where the item waits: its vendor's batch lane.
                routes.append(chosen.model_copy(update={"queue": batch_queue_for(chosen.vendor)}))
            except DispatcherError as error:
                problems.append((line.line, str(error)))
        if problems:
            raise BatchFileError(problems, unit=unit)
        return routes

    def _send(
        self,
        batch_id: str,
        sending: Sequence[RunJobs],
        every: Sequence[RunJobs],
        window: int = 0,
    ) -> None:
        """Send `sending` (numbered as in `every`) to their vendors' batch lanes.

        With a `window`, message n stands for itself and n + window, n + 2 x window ...
        (its successors). Should sending fail, the items of every message that will
        not go out are failed with the reason, so the batch still ends, and the
        error is raised.
        """
        for sent, message in enumerate(sending):
            try:
                if sent == 0:  # their items wait for them from now on (dispatcher.runner.sweeper)
                    self.store.waiting.expect(job for m in sending for job in m.job_ids)
                self._send_jobs(message, batch_queue_for(message.vendor))
            except Exception as exc:
                failed = sending[sent:]
                # A chained message n stands for every n' with n' % window == n.
                chains = {(m.vendor, m.next_message - window) for m in failed}
                unsent = [
                    job_id
                    for n, m in _numbered(every)
                    if ((m.vendor, n % window) in chains if window else m in failed)
                    for job_id in m.job_ids
                ]
                self._fail_unsent(batch_id, unsent, exc)
                raise

    def _publishing(
        self, sending: Sequence[RunJobs], also_write: AlsoWrite | None, batch_id: str, pipe: Any
    ) -> None:
        """What goes in the batch's last transaction beside its head: with an outbox, its
        first messages onto their batch lanes; then the caller's `also_write`."""
        if self._outbox is not None:
            self.store.batches.enqueue(pipe, sending, self._outbox)
        if also_write is not None:
            also_write(pipe, batch_id)

    def _fail_unsent(self, batch_id: str, job_ids: Iterable[str], cause: Exception) -> None:
        error = DispatcherError(f"could not queue the batch's item: {cause}")
        for job_id in job_ids:
            try:
                self.store.finish(
                    job_id, JobStatus.FAILED, vendor=None, error=error, batch_id=batch_id
                )
            except Exception as exc:  # Redis gone too: say so, keep the first error
                cause.add_note(f"batch {batch_id}'s unsent items could not be failed: {exc}")
                return

    # --- following -------------------------------------------------------------------

    def status(self, batch_id: str) -> BatchRecord:
        """The batch's counts by state, times, tokens, cost and ETA now."""
        return self.store.batches.get(batch_id)

    def wait(
        self,
        batch_id: str,
        timeout_s: float | None = None,
        *,
        on_progress: Callable[[BatchRecord], Any] | None = None,
        interval_s: float = DEFAULT_PROGRESS_INTERVAL_S,
    ) -> BatchRecord:
        """Block until every item has ended; `on_progress(record)` every `interval_s` meanwhile.

        Wakes as soon as the last item ends (not on the next interval).

        Raises:
            BatchNotFound: no such batch.
            TimeoutError: items were still pending after `timeout_s` (they keep running).
        """
        pace = WaitPace(timeout_s, interval_s)
        while True:
            record = self.status(batch_id)
            if on_progress is not None:
                on_progress(record)
            if record.done:
                return record
            self.store.batches.wait_until_finished(batch_id, pace.next_slice_s(record))

    def results(self, batch_id: str) -> Iterator[BatchItem]:
        """Every item in input order, with its custom id and response or typed error."""
        return self.store.batches.items(batch_id)

    # --- changing --------------------------------------------------------------------

    def cancel(self, batch_id: str) -> int:
        """End every item that has not ended as cancelled; returns how many were.

        A batch whose items had all ended is left as it ended (no `cancelled_at`),
        and 0 is returned: `status(batch_id)` then tells how it ended.
        """
        if not self.store.batches.mark_cancelled(batch_id):
            return 0
        cancelled = 0
        for job_id, streams in self.store.batches.unfinished(batch_id):
            cancelled += self.store.finish(
                job_id,
                JobStatus.CANCELLED,
                vendor=None,
                event_reason="the batch was cancelled",
                stream=streams,
                batch_id=batch_id,
            )
        return cancelled

    def retry_failed(self, batch_id: str) -> int:
        """Resubmit the failed items into the same batch; returns how many were.

        Each gets a new job (the failed one keeps its record and its place in the
        statistics) routed afresh, in the failed item's place in the results.
        """
        failed = self.store.batches.failed(batch_id)
        if not failed:
            return 0
        live = self._live_state()
        replacements = []
        for index, job_id, request in failed:
            chosen = route(request, self.settings, live, self._rng)
            lane = chosen.model_copy(update={"queue": batch_queue_for(chosen.vendor)})
            replacements.append(Replacement(index, job_id, self.store.new_job_id(), request, lane))
        written = set(self.store.batches.replace(batch_id, replacements))
        # Few, as a rule: all their messages go at once, none chained.
        messages = _plan(
            batch_id, [(r.job_id, r.route.vendor) for r in replacements if r.job_id in written]
        )
        self._send(batch_id, messages, messages)
        return len(written)


class WaitPace:
    """How long each wait of `wait_batch` may be: up to the next report, within the timeout."""

    def __init__(self, timeout_s: float | None, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.timeout_s, self.interval_s = timeout_s, interval_s
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def next_slice_s(self, record: BatchRecord) -> float:
        """The next wait, in seconds.

        Raises:
            TimeoutError: the timeout has passed with items of `record` pending; names the batch.
        """
        if self.deadline is None:
            return self.interval_s
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"batch {record.batch_id} has {record.counts.pending} of "
                f"{record.counts.total} items pending after {self.timeout_s:g} s; "
                "they keep running: wait again, or cancel it"
            )
        return min(self.interval_s, remaining)


def one_by_one(send: Callable[[RunJob, str, int], None]) -> SendJobs:
    """A `SendJobs` that sends a batch message's items as `RunJob`s, one each (for tests)."""

    def send_jobs(message: RunJobs, queue: str) -> None:
        for item in message.messages():
            send(item, queue, 0)

    return send_jobs


def _plan(batch_id: str, items: Sequence[tuple[str, str]]) -> list[RunJobs]:
    """(job id, vendor) items as batch messages: per vendor, BATCH_MESSAGE_ITEMS each, in order."""
    by_vendor: dict[str, list[str]] = {}
    for job_id, vendor in items:
        by_vendor.setdefault(vendor, []).append(job_id)
    return [
        RunJobs(vendor, batch_id, tuple(job_ids[start : start + BATCH_MESSAGE_ITEMS]))
        for vendor, job_ids in by_vendor.items()
        for start in range(0, len(job_ids), BATCH_MESSAGE_ITEMS)
    ]


def _numbered(messages: Sequence[RunJobs]) -> Iterator[tuple[int, RunJobs]]:
    """Each message with its number among its vendor's messages (0, 1, 2 ...)."""
    counts: dict[str, int] = {}
    for message in messages:
        number = counts.get(message.vendor, 0)
        counts[message.vendor] = number + 1
        yield number, message


def _is_path(source: BatchSource) -> bool:
    return isinstance(source, str | os.PathLike)


def _lines_of(source: BatchSource, limits: BatchLimits) -> list[BatchLine]:
    if _is_path(source):
        return read_batch_file(source, limits=limits)  # type: ignore[arg-type]
    if isinstance(source, Request | Mapping):
        raise TypeError("submit_batch takes a list of requests or a file's path, not one request")
    return requests_as_lines(list(source), limits=limits)  # type: ignore[arg-type]
