"""A lane's submitted jobs, taken many to a Celery message: the ready set and its bells.

A submit does not send a Celery message per job. It adds the job to its lane's
ready set (`{p}:ready:<queue>`, scored by priority, then by order of arrival)
and sends a bell, a `dispatch.run_queued` message (`RunQueued`), only when none
of that priority is pending for the lane (`{p}:bell:<queue>:<priority>`), all in
the submit's one MULTI/EXEC. A worker that receives a bell takes up to
`TAKE_LIMIT` jobs, most urgent first, rings again while jobs are left, and runs
what it took concurrently, each as its own first attempt. So an idle lane's job
goes out at once, in a bell of its own, while a backlog pays Celery's cost per
message (about 1 ms of worker CPU here) once per up to 50 jobs, not once per job.

Nothing is lost in between. What a bell took is recorded under the bell's task
id (`{p}:taken`) in the same script that takes it, so a bell delivered again
after its worker died runs the same jobs (and adopts those already started);
the record is dropped once they have ended, before the bell is acknowledged.
Taking, ringing again and clearing the bell happen in one script, and so do
adding a job and ringing, so a job never waits in a ready set that no bell will
visit, unless the broker loses the bell itself: then the sweeper
(`dispatcher.runner.sweeper`) finds the lane's jobs waiting with no bell and rings.

Key names come from `dispatcher.state.keys.Keys`.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from dispatcher.broker.messages import TAKE_LIMIT
from dispatcher.state.redis_values import text as _text

if TYPE_CHECKING:
    from dispatcher.state.keys import Keys

__all__ = ["BELL_TTL_S", "Bell", "ReadyQueue", "TakeAllowance", "Taken", "priority_of_score"]

# A bell's key outlives its message by at most this long should the message be
# lost; a submit then rings again (a second bell only costs an empty take).
BELL_TTL_S = 60
# Scores: Celery priority (0 first) * SCORE_STEP + order of arrival.
SCORE_STEP = 10**14

# KEYS: ready set, order counter, bell key, the bell's list.
# ARGV: job id, Celery priority, bell message, bell TTL.
ENQUEUE = """
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) * 1e14 + seq, ARGV[1])
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', tonumber(ARGV[4])) then
  redis.call('LPUSH', KEYS[4], ARGV[3])
  return 1
end
return 0
"""

# KEYS: ready set, this bell's key, the taken hash, the bell's list.
# ARGV: the bell's task id, how many to take, the next bell's message, bell TTL.
# Returns {'new' or 'again', space-separated job ids}.
TAKE = """
local held = redis.call('HGET', KEYS[3], ARGV[1])
if held then
  return {'again', held}
end
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[2]))
local ids = {}
for i = 1, #popped, 2 do
  ids[#ids + 1] = popped[i]
end
local joined = table.concat(ids, ' ')
if #ids > 0 then
  redis.call('HSET', KEYS[3], ARGV[1], joined)
end
if redis.call('ZCARD', KEYS[1]) > 0 then
  redis.call('LPUSH', KEYS[4], ARGV[3])
  redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[4]))
else
  redis.call('DEL', KEYS[2])
end
return {'new', joined}
"""

# KEYS: bell key, the bell's list. ARGV: bell message, bell TTL.
RING = """
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], '1', 'EX', tonumber(ARGV[2]))
return 1
"""


@dataclass(frozen=True)
class Bell:
    """A bell's Celery message, ready to push: the list it goes on and its JSON."""

    list_name: str
    message: str


@dataclass(frozen=True)
class Taken:
    """The jobs a bell took; `again` when it had taken them on an earlier delivery."""

    job_ids: list[str]
    again: bool


def priority_of_score(score: float) -> int:
    """The Celery priority a ready job was queued with, from its score."""
    return max(0, min(9, int(score // SCORE_STEP)))


class TakeAllowance:
    """How many jobs a bell may take, from what this process holds per vendor.

    Up to `TAKE_LIMIT`, within `max_in_flight` held at once; past it one, so the
    chain of bells goes on while the lane's other workers, which take up to 50,
    get the backlog. Thread-safe: every task thread of a worker shares one.
    """

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def limit(self, vendor: str) -> int:
        """How many jobs a bell for `vendor` may take now."""
        with self._lock:
            free = self.max_in_flight - self._held.get(vendor, 0)
        return max(1, min(TAKE_LIMIT, free))

    def held(self, vendor: str) -> int:
        """Jobs of `vendor` held now."""
        with self._lock:
            return self._held.get(vendor, 0)

    @contextmanager
    def holding(self, vendor: str, count: int) -> Iterator[None]:
        """Count `count` jobs of `vendor` as held while the block runs."""
        with self._lock:
            self._held[vendor] = self._held.get(vendor, 0) + count
        try:
            yield
        finally:
            with self._lock:
                self._held[vendor] -= count


class ReadyQueue:
    """Adds jobs to a lane's ready set (with its bell), takes them, and lets them go."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._take = client.register_script(TAKE)
        self._ring = client.register_script(RING)

    def enqueue(
        self, pipeline: Any, job_id: str, queue: str, celery_priority: int, bell: Bell
    ) -> None:
        """Add the job to `queue`'s ready set in `pipeline`, and `bell` unless one is pending.

        EVAL rather than EVALSHA: inside MULTI/EXEC a script Redis lacks would fail
        alone while the job's other writes went through.
        """
        keys = [
            self.keys.ready(queue),
            self.keys.ready_seq(),
            self.keys.bell(queue, celery_priority),
            bell.list_name,
        ]
        args = [job_id, celery_priority, bell.message, BELL_TTL_S]
        pipeline.eval(ENQUEUE, len(keys), *keys, *args)

    def take(
        self,
        queue: str,
        celery_priority: int,
        task_id: str,
        next_bell: Bell,
        limit: int = TAKE_LIMIT,
    ) -> Taken:
        """The jobs bell `task_id` runs: those it took before, or up to `limit` new ones.

        Taking new ones rings `next_bell` while jobs are left, and clears the bell
        otherwise, in the same script.
        """
        reply = self._take(
            keys=[
                self.keys.ready(queue),
                self.keys.bell(queue, celery_priority),
                self.keys.taken(),
                next_bell.list_name,
            ],
            args=[task_id, max(1, limit), next_bell.message, BELL_TTL_S],
        )
        joined = _text(reply[1])
        return Taken(joined.split() if joined else [], _text(reply[0]) == "again")

    def release(self, task_id: str) -> None:
        """Bell `task_id`'s jobs have all ended: forget what it took."""
        self.redis.hdel(self.keys.taken(), task_id)

    def forget(self, task_ids: Iterable[str]) -> None:
        """Drop the takings of bells that are gone (the sweeper's tidying)."""
        ids = list(task_ids)
        if ids:
            self.redis.hdel(self.keys.taken(), *ids)

    def ring(self, queue: str, celery_priority: int, bell: Bell) -> None:
        """Send `bell` for `queue` whatever is pending (the sweeper's repair)."""
        self._ring(
            keys=[self.keys.bell(queue, celery_priority), bell.list_name],
            args=[bell.message, BELL_TTL_S],
        )

    def read_presence(self, pipeline: Any, queues: Iterable[str], job_ids: Collection[str]) -> int:
        """Queue into `pipeline` what `presence` reads; the number of replies it adds."""
        ids = list(job_ids)
        count = 0
        for queue in queues:
            pipeline.zrange(self.keys.ready(queue), 0, 0, withscores=True)  # the most urgent
            count += 1
            if ids:
                pipeline.zmscore(self.keys.ready(queue), ids)
                count += 1
        pipeline.hgetall(self.keys.taken())
        return count + 1

    @staticmethod
    def presence(
        replies: list[Any], queues: Iterable[str], job_ids: Collection[str]
    ) -> tuple[set[str], dict[str, int], dict[str, list[str]]]:
        """From `read_presence`'s replies: the jobs of `job_ids` in a ready set, the lanes
        with jobs waiting (-> the Celery priority of their most urgent), and what each
        bell took (task id -> job ids)."""
        ids = list(job_ids)
        found: set[str] = set()
        waiting: dict[str, int] = {}
        at = iter(replies)
        for queue in queues:
            top = next(at)
            if top:
                waiting[queue] = priority_of_score(float(top[0][1]))
            if ids:
                scores = next(at)
                found.update(job_id for job_id, score in zip(ids, scores, strict=True) if score)
        taken = {_text(task): _text(joined).split() for task, joined in next(at).items()}
        return found, waiting, taken
