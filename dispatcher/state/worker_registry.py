"""Living workers' heartbeats, and the messages each holds, so a dead one's come back fast.

Each worker process records the delivery tag of every message it receives, as
kombu records it unacknowledged, in `{p}:worker:<id>:held` (its bells, batch
messages and job messages), and removes it as it acknowledges it; and it beats
every few seconds: it vouches for itself until `now + dead_after_s` in
`{p}:workers`. A worker that stops beating (killed, out of memory,
its host lost) is found by any other worker's beat once its time has passed:
`take_dead` removes it and reads its tags in one script, so exactly one worker
takes them back and puts those messages at the head of their queues. Without this, only the
visibility timeout (an hour by default) brings them back; it stays the last
resort. A worker that stops cleanly leaves (`leave`) and is never taken back.

Key names come from `dispatcher.state.keys.Keys`; the taking is one Lua script a worker.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

import redis

from dispatcher.state.redis_values import text as _text

if TYPE_CHECKING:
    from dispatcher.state.keys import Keys

__all__ = ["WorkerRegistry"]

# KEYS: the workers hash, the worker's held-tags set. ARGV: the worker, now (epoch s).
# Returns the tags it held, or false when it has beaten since (or was taken already).
# Removing it and reading its tags in one script: two workers that find it dead at
# once cannot both take it back.
TAKE_DEAD = """
local until_at = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
if not until_at or until_at >= tonumber(ARGV[2]) then return false end
local tags = redis.call('SMEMBERS', KEYS[2])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return tags
"""


class WorkerRegistry:
    """Heartbeats in Redis: beat, leave, and take back what dead workers held."""

    def __init__(self, client: redis.Redis, keys: Keys, *, now: Callable[[], float]) -> None:
        self.redis = client
        self.keys = keys
        self.now = now
        self._take_dead = client.register_script(TAKE_DEAD)

    def hold(self, worker: str, tag: str) -> None:
        """`worker` has just received the message `tag` (kombu recorded it unacknowledged)."""
        self.redis.sadd(self.keys.worker_held(worker), tag)

    def release(self, worker: str, tag: str) -> None:
        """`worker` has acknowledged the message `tag`."""
        self.redis.srem(self.keys.worker_held(worker), tag)

    def beat(self, worker: str, dead_after_s: float, forget: Collection[str] = ()) -> None:
        """`worker` is alive for `dead_after_s` more; `forget` are tags it holds no longer."""
        held_key = self.keys.worker_held(worker)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.workers(), worker, repr(self.now() + dead_after_s))
        if forget:
            pipe.srem(held_key, *forget)
        # Outlives a worker nobody takes back (every worker gone), by a margin.
        pipe.expire(held_key, max(1, int(4 * dead_after_s)))
        pipe.execute()

    def leave(self, worker: str) -> None:
        """A worker that stops cleanly: not dead, nothing to take back."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self.keys.workers(), worker)
        pipe.delete(self.keys.worker_held(worker))
        pipe.execute()

    def living(self) -> dict[str, float]:
        """Every registered worker -> until when it is vouched for (epoch s)."""
        return {
            _text(worker): float(_text(until))
            for worker, until in self.redis.hgetall(self.keys.workers()).items()
        }

    def take_dead(self) -> dict[str, list[str]]:
        """Remove every worker whose heartbeat has passed; the tags each held, to send back."""
        now = self.now()
        taken: dict[str, list[str]] = {}
        for worker, until in self.living().items():
            if until >= now:
                continue
            keys = [self.keys.workers(), self.keys.worker_held(worker)]
            tags = self._take_dead(keys=keys, args=[worker, now])
            if tags is not None:
                taken[worker] = sorted(_text(tag) for tag in tags)
        return taken
