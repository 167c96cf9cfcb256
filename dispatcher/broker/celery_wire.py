"""Celery's task messages on kombu's Redis transport, written and read without Celery.

Both directions of one wire format: `TaskMessages.encode` builds the message a
submit writes itself, and `job_ids_in` reads back which jobs a queued or
unacknowledged message names (the sweeper's `workers.queued_messages`).

`Client.submit` writes a job and its message in one MULTI/EXEC: the job's hash
and history and the message's `LPUSH` onto its queue's list go to Redis
together, in one round trip, or not at all. `send_task` would take a second
round trip and most of a submit's CPU (building the message through Celery's
and kombu's layers: measured 58 % of a submit, bench/history/2026-12-01.md).

The message is exactly what `Celery.send_task` produces with our settings
(task protocol 2, JSON, body base64-encoded by the Redis transport, published
to the default exchange with the queue as routing key), which
`tests/integration/test_celery_wire.py` checks against a real `send_task`:

- `headers`: the task name and id, `argsrepr` (what Flower shows) and Celery's
  other protocol-2 fields at their defaults;
- `body`: `[args, {}, {"callbacks": null, ...}]`;
- `properties`: the Celery priority, kombu's delivery tag and the delivery
  info the worker's consumer reads.

The list is the queue's own, or for a priority one of kombu's per-priority
lists (`<queue>\\x06\\x16<step>`); a message delivered but not yet
acknowledged waits in kombu's `unacked` hash, as `[message, exchange,
routing key]`. Publishing straight to the list also means
a message never depends on kombu's exchange bindings, which only a worker
declares. With `LLMDISPATCH_SENT_EVENTS` set, submits go through `send_task`
instead, which emits the `task-sent` event.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import socket
import uuid
from bisect import bisect
from datetime import UTC, datetime, timedelta
from typing import Any

from dispatcher.broker.messages import (
    RUN_JOB_TASK,
    RUN_JOBS_TASK,
    RUN_QUEUED_TASK,
    RunJob,
    RunJobs,
    RunQueued,
)

__all__ = [
    "PRIORITY_SEP",
    "PRIORITY_STEPS",
    "UNACKED_KEY",
    "TaskMessages",
    "bell_in",
    "job_ids_in",
    "named_jobs",
    "priority_lists",
    "queue_list",
]

# kombu.transport.redis.Channel.sep, .priority_steps and .unacked_key (checked by the tests).
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED_KEY = "unacked"
# Celery's `argsrepr_maxsize` default: the longest `argsrepr` it sends.
ARGSREPR_MAXSIZE = 1024
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def queue_list(queue: str, celery_priority: int) -> str:
    """The Redis list kombu keeps `queue`'s messages of `celery_priority` in."""
    step = PRIORITY_STEPS[bisect(PRIORITY_STEPS, max(0, min(9, celery_priority))) - 1]
    return f"{queue}{PRIORITY_SEP}{step}" if step else queue


def priority_lists(queue: str) -> list[str]:
    """Every Redis list kombu keeps `queue` in, one per priority step."""
    return [f"{queue}{PRIORITY_SEP}{step}" if step else queue for step in PRIORITY_STEPS]


def job_ids_in(raw: bytes | str) -> list[str]:
    """The job ids a message (its JSON) names; [] for anything not one of ours."""
    try:
        return named_jobs(json.loads(raw))
    except ValueError:
        return []


def named_jobs(message: Any) -> list[str]:
    """The job ids a decoded message names; [] for anything not one of ours."""
    decoded = _task_and_args(message)
    if decoded is None or decoded[0] not in {RUN_JOB_TASK, RUN_JOBS_TASK}:
        return []
    task, args = decoded
    try:
        return [str(job_id) for job_id in args[2]] if task == RUN_JOBS_TASK else [str(args[0])]
    except (IndexError, TypeError):
        return []


def bell_in(message: Any) -> tuple[str, str] | None:
    """(task id, lane) of a decoded bell (`dispatch.run_queued`); None for any other message."""
    decoded = _task_and_args(message)
    if decoded is None or decoded[0] != RUN_QUEUED_TASK:
        return None
    try:
        return str(message["headers"]["id"]), str(decoded[1][0])
    except (KeyError, IndexError, TypeError):
        return None


def _task_and_args(message: Any) -> tuple[str, Any] | None:
    """(task name, positional arguments) of a decoded task message; None if it is none."""
    try:
        task = (message.get("headers") or {}).get("task")
        body: Any = message["body"]
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return str(task), json.loads(body)[0]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, binascii.Error):
        return None


class TaskMessages:
    """Builds the messages of one producer process (its `origin` and `reply_to`)."""

    def __init__(self) -> None:
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"
        self.reply_to = str(uuid.uuid4())

    def run_queued(self, bell: RunQueued) -> tuple[str, str]:
        """A bell, on its lane's list for its priority."""
        return self.encode(RUN_QUEUED_TASK, bell.as_args(), bell.queue, bell.priority)

    def run_jobs(self, message: RunJobs, queue: str) -> tuple[str, str]:
        """A batch message, on `queue`'s list (priority 0, as `send_task` would send it)."""
        return self.encode(RUN_JOBS_TASK, message.as_args(), queue, 0)

    def run_job(
        self, message: RunJob, queue: str, celery_priority: int, delay_s: float = 0.0
    ) -> tuple[str, str]:
        """A job's own message, on `queue`'s list for its priority; with `delay_s`, its
        `eta` that far ahead (as `send_task(countdown=delay_s)` sets it: the worker
        holds the message until then)."""
        eta = None
        if delay_s > 0:
            eta = (datetime.now(UTC) + timedelta(seconds=delay_s)).isoformat()
        return self.encode(RUN_JOB_TASK, message.as_args(), queue, celery_priority, eta=eta)

    def encode(
        self,
        task: str,
        args: list[Any],
        queue: str,
        celery_priority: int,
        *,
        eta: str | None = None,
    ) -> tuple[str, str]:
        """The list to LPUSH onto and the message, for task `task` called with `args`."""
        task_id = str(uuid.uuid4())
        argsrepr = repr(args)
        if len(argsrepr) > ARGSREPR_MAXSIZE:
            argsrepr = argsrepr[: ARGSREPR_MAXSIZE - 3] + "..."
        body = json.dumps([args, {}, _EMBED]).encode()
        message = {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": task,
                "id": task_id,
                "shadow": None,
                "eta": eta,
                "expires": None,
                "group": None,
                "group_index": None,
                "retries": 0,
                "timelimit": [None, None],
                "root_id": task_id,
                "parent_id": None,
                "argsrepr": argsrepr,
                "kwargsrepr": "{}",
                "origin": self.origin,
                "ignore_result": None,
                "replaced_task_nesting": 0,
                "stamped_headers": None,
                "stamps": {},
            },
            "properties": {
                "correlation_id": task_id,
                "reply_to": self.reply_to,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": celery_priority,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
        return queue_list(queue, celery_priority), json.dumps(message)
