"""Reading jobs through an asyncio Redis client: the async twin of `JobStore`'s reads.

Key names come from `dispatcher.state.keys.Keys` and records from
`store.record_from_hash`, so key names and the record layout each stay in one place. Writes (create,
cancel, finish) stay with `JobStore`, whose Lua scripts keep them atomic; the
one write done here is appending stream chunks, from the worker's event loop,
with the same script, many in one round trip.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio
from redis.exceptions import NoScriptError

from dispatcher.errors import JobNotFound
from dispatcher.models import JobError, JobRecord, JobStatus, Response, StreamEvent, ToolCallDelta
from dispatcher.state.keys import Keys, valid_job_id
from dispatcher.state.records import GLANCE_FIELDS, JobGlance
from dispatcher.state.redis_values import PENDING_TTL_S, WAIT_SLICE_S
from dispatcher.state.redis_values import decoded as _decoded
from dispatcher.state.redis_values import text as _text
from dispatcher.state.scripts import APPEND
from dispatcher.state.store import (
    TERMINAL,
    no_such_job,
    parse_stream_entry,
    record_from_hash,
    stream_event_body,
)

__all__ = ["AsyncJobReader", "AsyncStreamWriter", "wait_for_entry_async"]


@dataclass
class _StreamState:
    """What the writer knows of one attempt's stream: its last append, and whether it is over."""

    last: asyncio.Future[int] | None = None
    gone: bool = False  # an append found the job ended, or owned by a newer attempt
    error: BaseException | None = None


@dataclass
class _Pending:
    """Deltas of one stream not yet sent: they go out as one event."""

    job_id: str
    attempt: int
    parts: list[str]
    emitted_at: float
    future: asyncio.Future[int]
    state: _StreamState = field(default_factory=_StreamState)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


class AsyncStreamWriter:
    """Publishes streaming jobs' chunks: buffered for replay and sent on their channels.

    Group commit, on the worker's event loop: the appends offered while no write
    is in flight go to Redis at once, one pipeline of APPEND scripts (each still
    atomic) in one round trip; those offered while a write is in flight wait for
    it and go in the next. A stream whose deltas arrive faster than that has them
    joined into one event (one seq, the texts concatenated, the first delta's
    emission time), so a worker that falls behind sends fewer, larger chunks
    instead of queueing round trips. Only one write is in flight, so the events
    of a stream reach Redis in the order they were offered.
    """

    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self._sha: str | None = None
        self._queue: dict[tuple[str, int], _Pending] = {}
        self._streams: dict[tuple[str, int], _StreamState] = {}
        self._flusher: asyncio.Task[None] | None = None

    def offer(
        self,
        job_id: str,
        attempt: int,
        delta: str,
        emitted_at: float,
        tool_calls: Sequence[ToolCallDelta] = (),
    ) -> bool:
        """Queue one text delta of attempt `attempt`, with any pieces of its tool calls;
        False once the job no longer wants it.

        Does not wait: `drain` waits for what was offered. Raises the error of an
        earlier append of this stream that failed.
        """
        key = (job_id, attempt)
        state = self._streams.setdefault(key, _StreamState())
        if state.error is not None:
            raise state.error
        if state.gone:
            return False
        pending = self._queue.get(key)
        if pending is None:
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            pending = self._queue[key] = _Pending(
                job_id, attempt, [delta], emitted_at, future, state
            )
            state.last = future
        else:
            pending.parts.append(delta)
        if tool_calls:
            pending.tool_calls += [piece.model_dump(exclude_none=True) for piece in tool_calls]
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return True

    async def drain(self, job_id: str, attempt: int) -> None:
        """Wait until everything offered for this stream is written; forget the stream."""
        state = self._streams.pop((job_id, attempt), None)
        if state is not None and state.last is not None:
            await state.last

    async def append_chunk(self, job_id: str, attempt: int, delta: str, emitted_at: float) -> int:
        """Append one text delta and wait for it: its seq, or 0 when the job no longer wants it."""
        key = (job_id, attempt)
        if not self.offer(job_id, attempt, delta, emitted_at):
            self._streams.pop(key, None)
            return 0
        last = cast("asyncio.Future[int]", self._streams[key].last)
        try:
            return await last
        finally:
            if key not in self._queue:
                self._streams.pop(key, None)

    async def _flush(self) -> None:
        """Write queued appends, one pipeline per round trip, until none are left."""
        try:
            while self._queue:
                batch = list(self._queue.values())
                self._queue = {}
                try:
                    results = await self._write(batch)
                except Exception as exc:  # handed to every stream of the batch
                    results = [exc] * len(batch)
                for pending, result in zip(batch, results, strict=True):
                    _settle(pending, result)
        finally:
            self._flusher = None

    async def _write(self, batch: list[_Pending]) -> list[Any]:
        if self._sha is None:
            self._sha = await self.redis.script_load(APPEND)
        results = await self._pipeline(batch)
        if any(isinstance(r, NoScriptError) for r in results):
            # Redis lost its scripts (a restart): nothing of this batch ran; load, run again.
            self._sha = await self.redis.script_load(APPEND)
            results = await self._pipeline(batch)
        return results

    async def _pipeline(self, batch: list[_Pending]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for pending in batch:
                job_id, attempt = pending.job_id, pending.attempt
                fields: dict[str, Any] = {
                    "type": "chunk",
                    "job_id": job_id,
                    "attempt": attempt,
                    "delta": "".join(pending.parts),
                    "emitted_at": pending.emitted_at,
                }
                if pending.tool_calls:
                    fields["tool_calls"] = pending.tool_calls
                body = stream_event_body(fields)
                pipe.evalsha(
                    self._sha or "",
                    2,
                    self.keys.job(job_id),
                    self.keys.stream(job_id),
                    attempt,
                    self.keys.channel(job_id),
                    job_id,
                    body,
                    TERMINAL,
                    PENDING_TTL_S,
                )
            return list(await pipe.execute(raise_on_error=False))


def _settle(pending: _Pending, result: Any) -> None:
    """Hand an append's reply to whoever waits for it."""
    if isinstance(result, BaseException):
        pending.state.error = result
        pending.future.set_exception(result)
        pending.future.exception()  # retrieved here: only the stream's last one is awaited
        return
    seq = int(result)
    if seq == 0:
        pending.state.gone = True
    pending.future.set_result(seq)


class AsyncJobReader:
    """Reads job records and waits for jobs to end, without blocking the event loop."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)

    def _job_key(self, job_id: str) -> str:
        """The job's hash key.

        Raises:
            JobNotFound: `job_id` is not a job id at all.
        """
        if not valid_job_id(job_id):
            raise JobNotFound(f"{job_id!r} is not a job id (32 hex digits)", job_id=None)
        return self.keys.job(job_id)

    async def get(self, job_id: str) -> JobRecord:
        """The job's record (one round trip).

        Raises:
            JobNotFound: no such job (never created, or expired), or not a job id at all.
        """
        job_key = self._job_key(job_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(job_key)
            pipe.lrange(self.keys.events(job_id), 0, -1)
            fields, events = await pipe.execute()
        if not fields:
            raise no_such_job(job_id)
        return record_from_hash(job_id, _decoded(fields), [_text(e) for e in events])

    async def glance(self, job_id: str) -> JobGlance:
        """The job's status, whether it started, and its queue (one HMGET, nothing parsed
        but its route).

        Raises:
            JobNotFound: no such job (never created, or expired), or not a job id at all.
        """
        status, started_at, route = await self.redis.hmget(self._job_key(job_id), GLANCE_FIELDS)
        if status is None:
            raise no_such_job(job_id)
        return JobGlance.from_fields(
            _text(status),
            None if started_at is None else _text(started_at),
            None if route is None else _text(route),
        )

    async def streams(self, job_id: str) -> bool:
        """Whether the job's request asked for a stream (its request read as plain JSON).

        Raises:
            JobNotFound: no such job (never created, or expired), or not a job id at all.
        """
        request = await self.redis.hget(self._job_key(job_id), "request")
        if request is None:
            raise no_such_job(job_id)
        return json.loads(request).get("stream") is True

    async def outcome(self, job_id: str) -> tuple[JobStatus, Response | None, JobError | None]:
        """The job's status, and its response or error once it has ended (one round trip;
        nothing else of the record is read or parsed, the request least of all).

        Raises:
            JobNotFound: no such job (never created, or expired), or not a job id at all.
        """
        status, response, error = await self.redis.hmget(
            self._job_key(job_id), ["status", "response", "error"]
        )
        if status is None:
            raise no_such_job(job_id)
        return (
            JobStatus(_text(status)),
            Response.model_validate_json(response) if response else None,
            JobError.model_validate_json(error) if error else None,
        )

    async def stream_events(self, job_id: str, after_seq: int = 0) -> list[StreamEvent]:
        """The job's buffered stream events with seq above `after_seq`, in order."""
        entries = await self.redis.xrange(self.keys.stream(job_id)) or []
        events = [parse_stream_entry(fields) for _, fields in entries]
        return [event for event in events if event.seq > after_seq]

    async def wait_until_ended(self, job_id: str, timeout_s: float) -> bool:
        """Wait until the job has ended (True) or `timeout_s` passed (False)."""
        return await wait_for_entry_async(self.redis, self.keys.done(job_id), timeout_s)

    async def wait_until_batch_finished(self, batch_id: str, timeout_s: float) -> bool:
        """Wait until every item of the batch has ended (True) or `timeout_s` passed (False)."""
        return await wait_for_entry_async(self.redis, self.keys.batch_done(batch_id), timeout_s)


async def wait_for_entry_async(client: redis.asyncio.Redis, key: str, timeout_s: float) -> bool:
    """`redis_values.wait_for_entry` for asyncio: until the list `key` holds an entry."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bool(await client.exists(key))  # a zero timeout still reports an entry
        # Moving the one entry to the same list leaves it for every other waiter;
        # slices end before the socket timeout.
        slice_s = min(remaining, WAIT_SLICE_S)
        # Redis takes fractional seconds here; redis-py's stub says int.
        if await client.blmove(key, key, slice_s, "LEFT", "LEFT"):  # type: ignore[arg-type]
            return True
