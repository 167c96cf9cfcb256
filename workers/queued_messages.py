"""Which jobs have a message in the broker: the sweeper's eyes on kombu's Redis lists.

The wire format (the lists a queue is kept in, the `unacked` hash, what a
message names) is `dispatcher.broker.celery_wire`'s.

The lists and the hash are read in one MULTI/EXEC, so a message moving from a
list to the hash (delivered) or back (restored) between two reads is never
missed by both. A lane longer than `scan_limit` messages is not read: it is a
backlog, and its jobs are left for a later pass. The lanes' ready sets and the
bells' takings (`dispatcher.broker.ready_queue`) are read in the same MULTI/EXEC.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any

import redis

from dispatcher.broker.celery_wire import UNACKED_KEY, bell_in, named_jobs, priority_lists
from dispatcher.broker.ready_queue import ReadyQueue
from dispatcher.runner.sweeper import Presence

__all__ = ["SCAN_LIMIT", "present_jobs"]

# Messages read per lane at most, in one pass.
SCAN_LIMIT = 5_000


def present_jobs(
    client: redis.Redis,
    ready: ReadyQueue,
    lanes: Iterable[str],
    candidates: Collection[str] = (),
    scan_limit: int = SCAN_LIMIT,
) -> Presence:
    """The jobs with a message in `lanes` (queue names) or unacknowledged anywhere.

    A job of `candidates` waiting in its lane's ready set counts as present, and so
    does a job a bell took while that bell is queued or unacknowledged; a lane with
    jobs ready but no bell anywhere is reported (`unrung`), to be rung again.
    """
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
    ready_replies = ready.read_presence(snapshot, lists, candidates)
    replies = snapshot.execute()
    queued, unacked = replies[: -ready_replies - 1], replies[-ready_replies - 1]
    in_ready, waiting, taken = ready.presence(replies[-ready_replies:], lists, candidates)
    found: set[str] = set(in_ready)
    bells: dict[str, str] = {}  # task id -> lane
    messages = [m for entries in queued for m in _decoded(entries)]
    messages += [entry[0] for entry in _decoded(unacked) if isinstance(entry, list) and entry]
    for message in messages:  # unacked entries are [message, exchange, routing key]
        found.update(named_jobs(message))
        bell = bell_in(message)
        if bell is not None:
            bells[bell[0]] = bell[1]
    for task_id in bells:
        found.update(taken.get(task_id, ()))
    rung = set(bells.values())
    unrung = {lane: priority for lane, priority in waiting.items() if lane not in rung | too_long}
    stale = frozenset(task_id for task_id in taken if task_id not in bells)
    return Presence(frozenset(found), frozenset(too_long), unrung, stale)


def _decoded(entries: Iterable[bytes | str]) -> list[Any]:
    """The entries that are JSON, decoded; the others are not ours."""
    out = []
    for entry in entries:
        try:
            out.append(json.loads(entry))
        except ValueError:
            continue
    return out
