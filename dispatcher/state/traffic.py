"""Each vendor's traffic now, from Redis: queued messages, running jobs, the last minute.

Workers keep what this reads as jobs move: the claim adds a job to its
vendor's running set and the end (or a reschedule) takes it out; the end also
counts the job's request and tokens in its vendor's minute and moves the
vendor's moving average latency. The queue's depth is what waits in
`llm.<vendor>`: the jobs in its ready set (`dispatcher.broker.ready_queue`) and the
messages in kombu's own lists, less the bells among them (which name no job).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from dispatcher.broker.celery_wire import PRIORITY_STEPS, priority_lists
from dispatcher.state.stats import latency_average_field

if TYPE_CHECKING:
    from dispatcher.state.keys import Keys

__all__ = [
    "WAITING_REPLIES",
    "Activity",
    "Load",
    "Traffic",
    "count_waiting",
    "running_since",
    "waiting_in",
]

# A job still running after this many of its vendor's timeouts (the call, then a
# stream) belongs to a worker that died: it is not counted as in flight.
ABANDONED_AFTER_TIMEOUTS = 2


def running_since(vendor_timeout_s: float, now: float) -> float:
    """The start before which a job in a vendor's running set counts as abandoned."""
    return now - ABANDONED_AFTER_TIMEOUTS * vendor_timeout_s


# Celery priorities a bell can carry, 0 to 9.
_BELL_PRIORITIES = range(10)


def count_waiting(pipe: redis.client.Pipeline, keys: Keys, queue: str) -> None:
    """Queue the `WAITING_REPLIES` commands `waiting_in` reads for `queue`."""
    for key in priority_lists(queue):  # kombu's lists for the queue, one per priority step
        pipe.llen(key)
    pipe.zcard(keys.ready(queue))
    pipe.exists(*[keys.bell(queue, priority) for priority in _BELL_PRIORITIES])


def waiting_in(replies: list[Any]) -> int:
    """How many jobs wait in a queue, from `count_waiting`'s replies."""
    *lists, ready, bells = (int(n) for n in replies)
    return max(0, sum(lists) - bells) + ready


# Replies of `count_waiting`: one per priority list, the ready set, the pending bells.
WAITING_REPLIES = len(PRIORITY_STEPS) + 2


@dataclass(frozen=True)
class Activity:
    """A vendor's load now: messages waiting, calls running, the last minute's traffic."""

    queue_depth: int
    in_flight: int
    requests_per_minute: float
    tokens_per_minute: float


@dataclass(frozen=True)
class Load:
    """What routing by load and latency needs of a vendor."""

    queue_depth: int
    in_flight: int
    latency_ms: float | None


class Traffic:
    """Reads vendors' queues, running sets, minutes and moving average latencies."""

    def __init__(
        self, client: redis.Redis, keys: Keys, *, now: Callable[[], float] = time.time
    ) -> None:
        self.redis = client
        self.keys = keys
        self.now = now

    def activity(self, vendor: str, queue: str, running_since: float) -> Activity:
        """What is happening on `vendor` now: queued, running, and its last minute's load.

        `queue` is the vendor's Celery queue; jobs that started before
        `running_since` are taken to be abandoned (their worker died) and are not
        counted as running.
        """
        now = self.now()
        minute = int(now // 60)
        pipe = self.redis.pipeline(transaction=False)
        self._count_work(pipe, vendor, queue, running_since)
        pipe.hgetall(self.keys.minute(vendor, minute))
        pipe.hgetall(self.keys.minute(vendor, minute - 1))
        *work, this_minute, last_minute = pipe.execute()
        queue_depth, in_flight = _work(work)
        # A sliding minute: all of this one so far, and the rest of the last one.
        weight = 1.0 - (now % 60) / 60.0

        def per_minute(field: str) -> float:
            return _number(this_minute, field) + _number(last_minute, field) * weight

        return Activity(
            queue_depth=queue_depth,
            in_flight=in_flight,
            requests_per_minute=per_minute("requests"),
            tokens_per_minute=per_minute("tokens"),
        )

    def loads(
        self, queues: Mapping[str, str], running_since: Mapping[str, float]
    ) -> dict[str, Load]:
        """Each vendor's queued and running jobs and moving average latency, in one round trip.

        `queues` maps each vendor to its Celery queue; `running_since` to the start
        before which a running job counts as abandoned.
        """
        vendors = list(queues)
        if not vendors:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for vendor in vendors:
            self._count_work(pipe, vendor, queues[vendor], running_since[vendor])
        pipe.hmget(self.keys.stats(), [latency_average_field(v) for v in vendors])
        *replies, averages = pipe.execute()
        found = {}
        for index, vendor in enumerate(vendors):
            queue_depth, in_flight = _work(replies[index * _WORK : (index + 1) * _WORK])
            average = averages[index]
            found[vendor] = Load(
                queue_depth=queue_depth,
                in_flight=in_flight,
                latency_ms=float(average) if average is not None else None,
            )
        return found

    def _count_work(
        self, pipe: redis.client.Pipeline, vendor: str, queue: str, running_since: float
    ) -> None:
        """Queue the `_WORK` commands that `_work` reads: what waits, then running jobs."""
        count_waiting(pipe, self.keys, queue)
        pipe.zcount(self.keys.running(vendor), running_since, "+inf")


# Replies per vendor of `_count_work`: what waits, then the running count.
_WORK = WAITING_REPLIES + 1


def _work(replies: list[Any]) -> tuple[int, int]:
    """(queue depth, in flight) from the replies of `_count_work`."""
    return waiting_in(replies[:-1]), int(replies[-1])


def _number(fields: Mapping[Any, Any], name: str) -> float:
    value = fields.get(name.encode(), fields.get(name))
    return float(value) if value is not None else 0.0
