"""Batches in Redis: a hash of counts by state, and the batch's jobs in input order.

A batch is a list of ordinary jobs (each with its own record, retries,
fallbacks and result) plus a hash the job transitions keep up to date: the
claim moves an item from `queued` to `running`, a reschedule back, and the end
to `succeeded`, `failed` or `cancelled` with its tokens and cost, all in the
same Lua step as the job's own change, so the counts always equal the items.
When the last item ends the batch is finished: its done list gets one entry
(waiters wake) and its keys expire `job_ttl_s` later, like its items.

Cancelling marks the batch (`cancelled_at`) only while some item has not
ended: a batch that has ended stays exactly as it ended.

A batch is written a few thousand items per transaction and comes into being
in a last one (`create`), so writing 50,000 items never blocks Redis for long.

Key names come from `dispatcher.state.keys.Keys`; the writes are the `BATCH_ADD`
and `BATCH_CANCEL` scripts (`dispatcher.state.scripts`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import redis

from dispatcher.broker.messages import RunJobs
from dispatcher.errors import BatchNotFound, JobCancelled
from dispatcher.models import (
    BatchCounts,
    BatchItem,
    BatchRecord,
    JobError,
    JobEvent,
    JobEventKind,
    JobStatus,
    Request,
    Response,
    Route,
)
from dispatcher.routing.router import batch_queue_for
from dispatcher.state.redis_values import PENDING_TTL_S, wait_for_entry
from dispatcher.state.redis_values import at as _at
from dispatcher.state.redis_values import text as _text
from dispatcher.state.scripts import BATCH_ADD, BATCH_CANCEL

if TYPE_CHECKING:
    from dispatcher.broker.outbox import Outbox
    from dispatcher.state.idempotency import IdempotencyKeys
    from dispatcher.state.keys import Keys
    from dispatcher.state.waiting_jobs import WaitingJobs

__all__ = ["BatchStore", "NewItem", "Replacement"]

# Items per BATCH_ADD call: a smaller call keeps each command's size and Lua's stack
# modest.
WRITE_CHUNK = 1_000
# Items per MULTI/EXEC while a batch is written: Redis runs a transaction whole, so
# this bounds how long one blocks every other client: 500 items, 26-30 ms on a busy
# 2-core machine, where the whole batch at once blocked a second (bench/batch_write_block.py).
ITEMS_PER_TRANSACTION = 500
# Job hashes read per round trip when listing results or cancelling.
READ_PAGE = 1_000
_COUNTS = ("total", "queued", "running", "succeeded", "failed", "cancelled")
_ITEM_FIELDS = ("status", "response", "error", "attempts")


@dataclass(frozen=True)
class NewItem:
    """A job to create as an item of a batch."""

    job_id: str
    custom_id: str
    request: Request
    route: Route


@dataclass(frozen=True)
class Replacement:
    """A new job taking the place of the failed job at `index` (`retry_failed`)."""

    index: int
    failed_job_id: str
    job_id: str
    request: Request
    route: Route


class BatchStore:
    """Creates batches, reads their counts and results in order, cancels and retries them."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        idempotency: IdempotencyKeys,
        waiting: WaitingJobs,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.idempotency = idempotency
        self.waiting = waiting
        self.now = now
        self._add = client.register_script(BATCH_ADD)
        self._cancel = client.register_script(BATCH_CANCEL)

    @staticmethod
    def new_batch_id() -> str:
        """A fresh, unguessable batch id (the same form as job ids)."""
        return uuid.uuid4().hex

    # --- writing -----------------------------------------------------------------

    def create(
        self,
        batch_id: str,
        items: Sequence[NewItem],
        *,
        messages: Mapping[tuple[str, int], Sequence[str]],
        metadata: Mapping[str, str] | None = None,
        window: int = 0,
        also: Callable[[Any], None] | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Write the batch: its items a few hundred per MULTI/EXEC, then, in one last
        MULTI/EXEC, what makes it exist (its head, its messages' items and `also`, the
        caller's first messages); the batch id, or the one `idempotency_key` named.

        No single transaction holds more than `ITEMS_PER_TRANSACTION` items, so a
        50,000-item batch never blocks Redis for long at once; until the last step
        the batch does not exist (`get` raises `BatchNotFound`) and no message names
        its items, so no worker sees a part of it. A submit that dies midway leaves
        only items no message will ever carry, which expire with the pending TTL; so
        does one that loses a race for its `idempotency_key` (the producer looks the
        key up before it reads the batch; the last step alone decides).
        `messages` maps (vendor, n) to the job ids of the vendor's n-th batch message;
        message n sends message n + `window` (0: the messages are not chained).
        """
        if not items:
            raise ValueError("a batch needs at least one item")
        now = self.now()
        keys = self.keys.batch_keys(batch_id)
        for start in range(0, len(items), ITEMS_PER_TRANSACTION):
            pipe = self.redis.pipeline(transaction=True)
            if start == 0:
                pipe.delete(*keys)
            end = min(start + ITEMS_PER_TRANSACTION, len(items))
            for chunk_start in range(start, end, WRITE_CHUNK):
                chunk = items[chunk_start : min(chunk_start + WRITE_CHUNK, end)]
                self._write(pipe, "new", batch_id, now, [(item, "", "") for item in chunk])
            pipe.execute()

        def publish(pipe: Any) -> None:
            head = {
                "created_at": repr(now),
                "metadata": json.dumps(dict(metadata or {})),
                "window": window,
            }
            pipe.hset(keys[0], mapping=cast("Mapping[Any, Any]", head))
            fields = {f"{vendor}:{n}": ",".join(ids) for (vendor, n), ids in messages.items()}
            if fields:
                pipe.hset(keys[4], mapping=cast("Mapping[Any, Any]", fields))
                pipe.expire(keys[4], PENDING_TTL_S)
            if also is not None:
                also(pipe)

        if idempotency_key is not None:
            return self.idempotency.write_once(idempotency_key, batch_id, publish)
        pipe = self.redis.pipeline(transaction=True)
        publish(pipe)
        pipe.execute()
        return batch_id

    def enqueue(self, pipeline: Any, messages: Sequence[RunJobs], outbox: Outbox) -> None:
        """Write `messages` onto their vendors' batch lanes in `pipeline`, their items
        waiting for them from now on (`dispatcher.state.waiting_jobs`), in the same transaction."""
        self.waiting.expect((job for m in messages for job in m.job_ids), pipeline=pipeline)
        for message in messages:
            outbox.send_jobs(message, batch_queue_for(message.vendor), pipeline)

    def message_items(self, batch_id: str, vendor: str, number: int) -> list[str]:
        """The job ids of the batch's `number`-th message for `vendor` ([] past the last)."""
        value = self.redis.hget(self.keys.batch_messages(batch_id), f"{vendor}:{number}")
        return _text(value).split(",") if value else []

    def messages_holding(self, batch_id: str, vendors: Mapping[str, str]) -> list[RunJobs]:
        """The batch messages that carry the items `vendors` names (job id -> vendor).

        Each as first sent, its place in the chain included; items in no numbered
        message (`retry_failed`'s, sent unchained) come in unchained ones of their own.
        """
        fields = self.redis.hgetall(self.keys.batch_messages(batch_id))
        window = int(_text(self.redis.hget(self.keys.batch(batch_id), "window") or "0"))
        found: list[RunJobs] = []
        left = dict(vendors)
        for name, value in fields.items():
            vendor, _, number = _text(name).rpartition(":")
            job_ids = tuple(_text(value).split(","))
            if any(job_id in left for job_id in job_ids):
                n = int(number)
                chained = window > 0
                found.append(
                    RunJobs(vendor, batch_id, job_ids, n + window if chained else -1, window)
                )
                for job_id in job_ids:
                    left.pop(job_id, None)
        by_vendor: dict[str, list[str]] = {}
        for job_id, vendor in left.items():
            by_vendor.setdefault(vendor, []).append(job_id)
        found += [RunJobs(vendor, batch_id, tuple(ids)) for vendor, ids in by_vendor.items()]
        return found

    def replace(self, batch_id: str, replacements: Sequence[Replacement]) -> list[str]:
        """Put new jobs in the places of failed ones; returns the ids of those written.

        A place no longer holding its failed job (another retry took it) is left
        alone, and its new job is not written.
        """
        if not replacements:
            return []
        now = self.now()
        pipe = self.redis.pipeline(transaction=True)
        for start in range(0, len(replacements), WRITE_CHUNK):
            chunk = replacements[start : start + WRITE_CHUNK]
            rows = [
                (
                    NewItem(r.job_id, "", r.request, r.route),
                    str(r.index),
                    r.failed_job_id,
                )
                for r in chunk
            ]
            self._write(pipe, "retry", batch_id, now, rows)
        written = pipe.execute()
        return [_text(job_id) for reply in written for job_id in reply]

    def _write(
        self,
        pipe: Any,
        mode: str,
        batch_id: str,
        now: float,
        rows: Sequence[tuple[NewItem, str, str]],
    ) -> None:
        keys = self.keys.batch_keys(batch_id)[:4]  # hash, jobs, custom ids, done
        args: list[Any] = [mode, repr(now), PENDING_TTL_S, batch_id]
        for item, index, failed in rows:
            keys += [self.keys.job(item.job_id), self.keys.events(item.job_id)]
            deadline = item.request.timeout_s
            event = JobEvent(kind=JobEventKind.QUEUED, at=_at(now), vendor=item.route.vendor)
            args += [
                item.job_id,
                item.custom_id,
                item.request.model_dump_json(),
                item.route.model_dump_json(),
                repr(now + deadline) if deadline is not None else "",
                event.model_dump_json(),
                index,
                failed,
            ]
        self._add(keys=keys, args=args, client=pipe)

    def mark_cancelled(self, batch_id: str) -> bool:
        """Record that the batch is cancelled (its items are then ended one by one).

        Returns False, writing nothing, when every item had already ended: an
        ended batch keeps the record it ended with.

        Raises:
            BatchNotFound: no such batch.
        """
        self._require(batch_id)
        outcome = _text(self._cancel(keys=[self.keys.batch(batch_id)], args=[repr(self.now())]))
        if outcome == "missing":  # expired since `_require` read it
            raise BatchNotFound(f"no batch {batch_id!r}: it never existed or has expired")
        return outcome == "cancelling"

    # --- reading -----------------------------------------------------------------

    def get(self, batch_id: str) -> BatchRecord:
        """The batch's counts, times, tokens, cost and ETA now.

        Raises:
            BatchNotFound: no such batch (never created, expired, or not a batch id).
        """
        fields = self._require(batch_id)
        counts = BatchCounts(**{name: max(0, int(fields.get(name, "0"))) for name in _COUNTS})
        started = _number(fields, "started_at")
        return BatchRecord(
            batch_id=batch_id,
            counts=counts,
            created_at=_at(_number(fields, "created_at") or 0.0),
            started_at=_at(started) if started else None,
            finished_at=_moment(fields, "finished_at"),
            cancelled_at=_moment(fields, "cancelled_at"),
            prompt_tokens=int(fields.get("prompt_tokens", "0")),
            completion_tokens=int(fields.get("completion_tokens", "0")),
            cost_usd=max(0.0, float(fields.get("cost_usd", "0"))),
            eta_s=self._eta(counts, started),
            metadata=json.loads(fields.get("metadata") or "{}"),
        )

    def _eta(self, counts: BatchCounts, started: float | None) -> float | None:
        """Seconds left at the rate items have ended since the first one started."""
        if counts.ended >= counts.total:
            return 0.0
        if not started or counts.ended == 0:
            return None
        elapsed = max(1e-3, self.now() - started)
        return counts.pending * elapsed / counts.ended

    def job_ids(self, batch_id: str) -> list[str]:
        """The batch's job ids, in input order."""
        self._require(batch_id)
        return [
            _text(job_id) for job_id in self.redis.lrange(self.keys.batch_jobs(batch_id), 0, -1)
        ]

    def items(self, batch_id: str) -> Iterator[BatchItem]:
        """Every item, in input order, with its status and response or typed error."""
        self._require(batch_id)
        jobs_key, ids_key = self.keys.batch_jobs(batch_id), self.keys.batch_custom_ids(batch_id)
        total = int(self.redis.llen(jobs_key))
        for start in range(0, total, READ_PAGE):
            stop = min(total, start + READ_PAGE) - 1
            pipe = self.redis.pipeline(transaction=False)
            pipe.lrange(jobs_key, start, stop)
            pipe.lrange(ids_key, start, stop)
            job_ids, custom_ids = (list(map(_text, reply)) for reply in pipe.execute())
            pipe = self.redis.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hmget(self.keys.job(job_id), list(_ITEM_FIELDS))
            rows = pipe.execute()
            for offset, (job_id, custom_id, row) in enumerate(
                zip(job_ids, custom_ids, rows, strict=True)
            ):
                yield _item(start + offset, custom_id, job_id, row)

    def unfinished(self, batch_id: str) -> Iterator[tuple[str, bool]]:
        """(job id, streams?) of every item that has not ended, in input order."""
        jobs = self.job_ids(batch_id)
        for start in range(0, len(jobs), READ_PAGE):
            page = jobs[start : start + READ_PAGE]
            pipe = self.redis.pipeline(transaction=False)
            for job_id in page:
                pipe.hmget(self.keys.job(job_id), ["status", "request"])
            for job_id, (status, request) in zip(page, pipe.execute(), strict=True):
                if status is None or JobStatus(_text(status)).is_terminal:
                    continue
                streams = bool(request) and Request.model_validate_json(request).stream
                yield job_id, streams

    def failed(self, batch_id: str) -> list[tuple[int, str, Request]]:
        """(index, job id, request) of every failed item, in input order."""
        found = []
        for item in self.items(batch_id):
            if item.status is JobStatus.FAILED:
                found.append(item)
        if not found:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for item in found:
            pipe.hget(self.keys.job(item.job_id), "request")
        requests = pipe.execute()
        return [
            (item.index, item.job_id, Request.model_validate_json(request))
            for item, request in zip(found, requests, strict=True)
            if request
        ]

    def wait_until_finished(self, batch_id: str, timeout_s: float) -> bool:
        """Block up to `timeout_s` until every item has ended (True) or not (False)."""
        return wait_for_entry(self.redis, self.keys.batch_done(batch_id), timeout_s)

    def _require(self, batch_id: str) -> dict[str, str]:
        try:
            key = self.keys.batch(batch_id)
        except LookupError:
            raise BatchNotFound(f"{batch_id!r} is not a batch id (32 hex digits)") from None
        fields = {_text(k): _text(v) for k, v in self.redis.hgetall(key).items()}
        if not fields:
            raise BatchNotFound(f"no batch {batch_id!r}: it never existed or has expired")
        if "created_at" not in fields:  # its submit is still writing items, or died doing so
            raise BatchNotFound(f"no batch {batch_id!r} yet: its submit has not finished")
        return fields


def _item(index: int, custom_id: str, job_id: str, row: Sequence[Any]) -> BatchItem:
    status, response, error, attempts = (None if v is None else _text(v) for v in row)
    if status is None:
        expired = JobError(kind="expired", message=f"job {job_id}'s record has expired")
        return BatchItem(index=index, custom_id=custom_id, job_id=job_id, error=expired)
    state = JobStatus(status)
    job_error = JobError.model_validate_json(error) if error else None
    if state is JobStatus.CANCELLED and job_error is None:
        job_error = JobError.model_validate(
            JobCancelled(f"job {job_id} was cancelled", job_id=job_id).to_dict()
        )
    return BatchItem(
        index=index,
        custom_id=custom_id,
        job_id=job_id,
        status=state,
        attempts=int(attempts or 0),
        response=Response.model_validate_json(response) if response else None,
        error=job_error,
    )


def _number(fields: Mapping[str, str], name: str) -> float | None:
    value = fields.get(name)
    return float(value) if value else None


def _moment(fields: Mapping[str, str], name: str) -> datetime | None:
    value = _number(fields, name)
    return _at(value) if value is not None else None
