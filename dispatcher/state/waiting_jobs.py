"""The index of queued jobs whose message is out, which the sweeper reads.

A job enters it when its message is sent (a submit, a batch message, a retry
or a fallback), scored by when that message is due, and leaves it when a
message starts it. A job still in it well past that moment either waits
behind a backlog, or its message is gone: `dispatcher.runner.sweeper` tells the two
apart and sends a lost message again (`requeue`).

Key names come from `dispatcher.state.keys.Keys`; the requeue is the `REQUEUE`
script (`dispatcher.state.scripts`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from dispatcher.models import JobEvent, JobStatus, Route
from dispatcher.state.redis_values import text as _text
from dispatcher.state.scripts import REQUEUE

if TYPE_CHECKING:
    from dispatcher.state.keys import Keys

__all__ = ["WaitingJob", "WaitingJobs"]

_FIELDS = ("status", "attempt", "route", "batch_id", "next")


@dataclass(frozen=True)
class WaitingJob:
    """What the sweeper needs of a queued job: which message it waits for, and where."""

    job_id: str
    attempt: int
    route: Route
    batch_id: str
    # The arguments of the message it waits for (`RunJob.as_args`), when a worker
    # sent it; () for a job's first message, sent by the producer.
    next_args: tuple[Any, ...]


class WaitingJobs:
    """Adds jobs to the index, finds the overdue ones and requeues a lost message's job."""

    def __init__(self, client: redis.Redis, keys: Keys, *, now: Callable[[], float]) -> None:
        self.redis = client
        self.keys = keys
        self.now = now
        self._requeue = client.register_script(REQUEUE)

    def expect(self, job_ids: Iterable[str], pipeline: Any = None) -> None:
        """The jobs' message is about to be sent, due now (into `pipeline` when given)."""
        now = self.now()
        members = dict.fromkeys(job_ids, now)
        if members:
            (pipeline if pipeline is not None else self.redis).zadd(self.keys.waiting(), members)

    def overdue(self, grace_s: float, limit: int) -> list[str]:
        """Up to `limit` jobs whose message was due more than `grace_s` ago, oldest first."""
        found = self.redis.zrangebyscore(
            self.keys.waiting(), "-inf", self.now() - grace_s, start=0, num=limit
        )
        return [_text(job_id) for job_id in found]

    def read(self, job_ids: Sequence[str]) -> list[WaitingJob]:
        """The jobs of `job_ids` still queued (the others leave the index)."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self.keys.job(job_id), _FIELDS)
        waiting: list[WaitingJob] = []
        gone: list[str] = []
        for job_id, values in zip(job_ids, pipe.execute(), strict=True):
            status, attempt, route, batch_id, next_args = (_text(v) if v else "" for v in values)
            if status != JobStatus.QUEUED.value or not route:
                gone.append(job_id)
                continue
            waiting.append(
                WaitingJob(
                    job_id,
                    int(attempt or 0),
                    Route.model_validate_json(route),
                    batch_id,
                    tuple(json.loads(next_args)) if next_args else (),
                )
            )
        if gone:
            self._forget_unless_queued(gone)
        return waiting

    def _forget_unless_queued(self, job_ids: Sequence[str]) -> None:
        # Through REQUEUE's own check, so a job queued again meanwhile stays; one round trip.
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            self._requeue(
                keys=[self.keys.job(job_id), self.keys.events(job_id), self.keys.waiting()],
                args=[-1, 0, "", "0"],
                client=pipe,
            )
        pipe.execute()

    def requeue(
        self, job_id: str, attempt: int, event: JobEvent, *, new_message: bool
    ) -> int | None:
        """Hand job `job_id`, still waiting for message `attempt`, to a message sent again.

        `new_message`: the job moves to attempt + 1, so the lost message, should it
        turn up after all, is stale. Returns the attempt to send, or None when the job
        is no longer waiting for that message (nothing is written then).
        """
        reply = self._requeue(
            keys=[self.keys.job(job_id), self.keys.events(job_id), self.keys.waiting()],
            args=[attempt, repr(self.now()), event.model_dump_json(), "1" if new_message else "0"],
        )
        return int(reply[1]) if _text(reply[0]) == "ok" else None

    # --- the sweeper's own state ----------------------------------------------------

    def take_turn(self, seconds: float) -> bool:
        """True for the one caller that may sweep for the next `seconds`."""
        return bool(
            self.redis.set(self.keys.sweep_turn(), "1", nx=True, px=max(1, int(seconds * 1000)))
        )

    def suspects(self) -> dict[str, int]:
        """Job id -> attempt, for the jobs whose message the last sweep found nowhere."""
        found = self.redis.hgetall(self.keys.sweep_suspects())
        return {_text(k): int(_text(v)) for k, v in found.items()}

    def set_suspects(self, suspects: Mapping[str, int], ttl_s: float) -> None:
        """Replace the suspects; they expire after `ttl_s` (a sweep missed is a fresh start)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.sweep_suspects())
        if suspects:
            pipe.hset(self.keys.sweep_suspects(), mapping={k: str(v) for k, v in suspects.items()})
            pipe.expire(self.keys.sweep_suspects(), max(1, int(ttl_s)))
        pipe.execute()
