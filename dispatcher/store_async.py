"""Reading jobs through an asyncio Redis client: the async twin of `JobStore`'s reads.

Key names come from `store.Keys` and records from `store.record_from_hash`, so
`store.py` stays the one module that knows the key layout. Writes (create,
cancel, finish) stay with `JobStore`, whose Lua scripts keep them atomic; the
one write done here is appending a stream chunk, from the worker's event loop,
with the same script.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import redis.asyncio

from dispatcher.errors import JobNotFound
from dispatcher.models import JobRecord, StreamEvent
from dispatcher.store import (
    PENDING_TTL_S,
    TERMINAL,
    WAIT_SLICE_S,
    Keys,
    parse_stream_entry,
    record_from_hash,
    stream_event_body,
    valid_job_id,
)
from dispatcher.store_scripts import APPEND

__all__ = ["AsyncJobReader", "AsyncStreamWriter"]


class AsyncStreamWriter:
    """Publishes a streaming job's chunks: buffered for replay and sent on its channel."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        self.keys = Keys(prefix)
        self._append = client.register_script(APPEND)

    async def append_chunk(self, job_id: str, attempt: int, delta: str, emitted_at: float) -> int:
        """Append one text delta; its seq, or 0 when the job ended or moved to a newer attempt."""
        body = stream_event_body(
            {
                "type": "chunk",
                "job_id": job_id,
                "attempt": attempt,
                "delta": delta,
                "emitted_at": emitted_at,
            }
        )
        seq = await self._append(
            keys=[self.keys.job(job_id), self.keys.stream(job_id)],
            args=[attempt, self.keys.channel(job_id), job_id, body, TERMINAL, PENDING_TTL_S],
        )
        return int(seq)


class AsyncJobReader:
    """Reads job records and waits for jobs to end, without blocking the event loop."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)

    async def get(self, job_id: str) -> JobRecord:
        """The job's record (one round trip).

        Raises:
            JobNotFound: no such job (never created, or expired), or not a job id at all.
        """
        if not valid_job_id(job_id):
            raise JobNotFound(f"{job_id!r} is not a job id (32 hex digits)", job_id=None)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.job(job_id))
            pipe.lrange(self.keys.events(job_id), 0, -1)
            fields, events = await pipe.execute()
        if not fields:
            raise JobNotFound(f"no job {job_id!r}: it never existed or has expired", job_id=job_id)
        return record_from_hash(job_id, _decoded(fields), [_text(e) for e in events])

    async def stream_events(self, job_id: str, after_seq: int = 0) -> list[StreamEvent]:
        """The job's buffered stream events with seq above `after_seq`, in order."""
        entries = await self.redis.xrange(self.keys.stream(job_id)) or []
        events = [parse_stream_entry(fields) for _, fields in entries]
        return [event for event in events if event.seq > after_seq]

    async def wait_until_ended(self, job_id: str, timeout_s: float) -> bool:
        """Wait until the job has ended (True) or `timeout_s` passed (False)."""
        done = self.keys.done(job_id)
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bool(await self.redis.exists(done))  # a zero timeout still reports an end
            # As in JobStore.wait_until_ended: moving the one entry to the same list
            # leaves it for every other waiter; slices end before the socket timeout.
            slice_s = min(remaining, WAIT_SLICE_S)
            # Redis takes fractional seconds here; redis-py's stub says int.
            if await self.redis.blmove(done, done, slice_s, "LEFT", "LEFT"):  # type: ignore[arg-type]
                return True


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decoded(mapping: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in mapping.items()}
