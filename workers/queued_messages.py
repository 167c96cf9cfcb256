"""Which jobs have a message in the broker: the sweeper's eyes on kombu's Redis lists.

The wire format (the lists a queue is kept in, the `unacked` hash, what a
message names) is `dispatcher.celery_wire`'s.

The lists and the hash are read in one MULTI/EXEC, so a message moving from a
list to the hash (delivered) or back (restored) between two reads is never
missed by both. A lane longer than `scan_limit` messages is not read: it is a
backlog, and its jobs are left for a later pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import redis

from dispatcher.celery_wire import UNACKED_KEY, job_ids_in, named_jobs, priority_lists
from dispatcher.sweeper import Presence

__all__ = ["SCAN_LIMIT", "present_jobs"]

# Messages read per lane at most, in one pass.
SCAN_LIMIT = 5_000


def present_jobs(
    client: redis.Redis, lanes: Iterable[str], scan_limit: int = SCAN_LIMIT
) -> Presence:
    """The jobs named by a message in `lanes` (queue names) or unacknowledged anywhere."""
    lists = {lane: priority_lists(lane) for lane in sorted(set(lanes))}
    sizing = client.pipeline(transaction=False)
    for names in lists.values():
        for name in names:
            sizing.llen(name)
    lengths = iter(sizing.execute())
    too_long = {
        lane for lane, names in lists.items() if sum(int(next(lengths)) for _ in names) > scan_limit
    }
    snapshot = client.pipeline(transaction=True)
    for lane, names in lists.items():
        if lane not in too_long:
            for name in names:
                snapshot.lrange(name, 0, -1)
    snapshot.hvals(UNACKED_KEY)
    *queued, unacked = snapshot.execute()
    found: set[str] = set()
    for entries in queued:
        for entry in entries:
            found.update(job_ids_in(entry))
    for entry in unacked:  # [message, exchange, routing key]
        try:
            found.update(named_jobs(json.loads(entry)[0]))
        except (ValueError, IndexError, TypeError, KeyError):
            continue
    return Presence(frozenset(found), frozenset(too_long))
