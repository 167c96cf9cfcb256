"""Which jobs have a message in the broker: the sweeper's eyes on kombu's Redis lists.

kombu's Redis transport keeps a queue as one list per priority step
(`<queue>`, `<queue>\\x06\\x163`, ...; newest at the head) and a message it has
delivered but not yet seen acknowledged in the `unacked` hash, as
`[message, exchange, routing key]`. A message is JSON whose `body` is our
task's arguments, base64-encoded (Celery's protocol 2: `[args, kwargs, embed]`).

The lists and the hash are read in one MULTI/EXEC, so a message moving from a
list to the hash (delivered) or back (restored) between two reads is never
missed by both. A lane longer than `scan_limit` messages is not read: it is a
backlog, and its jobs are left for a later pass.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Any

import redis
from kombu.transport.redis import Channel

from dispatcher.messages import RUN_JOB_TASK, RUN_JOBS_TASK
from dispatcher.sweeper import Presence

__all__ = ["SCAN_LIMIT", "job_ids_in", "present_jobs", "priority_lists"]

# Messages read per lane at most, in one pass.
SCAN_LIMIT = 5_000


def priority_lists(queue: str) -> list[str]:
    """The Redis lists kombu keeps queue `queue` in, one per priority step."""
    return [
        queue if step == 0 else f"{queue}{Channel.sep}{step}" for step in Channel.priority_steps
    ]


def job_ids_in(raw: bytes | str) -> list[str]:
    """The job ids a kombu message (its JSON) names; [] for anything not one of ours."""
    try:
        return _named_jobs(json.loads(raw))
    except ValueError:
        return []


def _named_jobs(message: Any) -> list[str]:
    try:
        task = (message.get("headers") or {}).get("task")
        if task not in {RUN_JOB_TASK, RUN_JOBS_TASK}:
            return []
        body: Any = message["body"]
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return [str(job_id) for job_id in args[2]] if task == RUN_JOBS_TASK else [str(args[0])]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, binascii.Error):
        return []


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
    snapshot.hvals(Channel.unacked_key)
    *queued, unacked = snapshot.execute()
    found: set[str] = set()
    for entries in queued:
        for entry in entries:
            found.update(job_ids_in(entry))
    for entry in unacked:  # [message, exchange, routing key]
        try:
            found.update(_named_jobs(json.loads(entry)[0]))
        except (ValueError, IndexError, TypeError, KeyError):
            continue
    return Presence(frozenset(found), frozenset(too_long))
