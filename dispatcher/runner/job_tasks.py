"""Each job as a Celery task of its own in Flower: the task events that show it.

A submitted job has no Celery message of its own: a bell (`dispatch.run_queued`)
carries up to 50, a batch message (`dispatch.run_jobs`) many. Celery's own task
events therefore show messages, not jobs. So the worker also sends, for every
attempt it runs, the events Celery would send for a task whose id (`uuid`) is
the job id, and Flower (through `celery.events.state`) lists each job as a task
with its true state:

    the attempt                                     its events, in order
    starts (claimed; its vendor is called next)     task-received, task-started
    succeeds                                        task-succeeded    SUCCESS
    fails                                           task-failed       FAILURE
    is rescheduled (retry, fallback, wait)          task-retried      RETRY
    started, but the job ended meanwhile (cancel)   task-revoked      REVOKED

An attempt that ends without starting (its deadline passed, its vendor cooling
down) sends task-received before its end; one that is skipped (the job already
ended, a stale or duplicate message) sends nothing. A retried job's next attempt
sends task-received again, and its task ends SUCCESS or FAILURE with `retried`
(the time of its last retry) and `retries` (its attempt number) still set.

The fields are those `celery.events.state.Task` keeps, shaped as Celery's own:
`name` is `job.<vendor>` ("job", because the task is a job and not one of our
messages, which are `dispatch.*`; the vendor, so Flower's task types, filters
and runtime metrics split by vendor, and a job that falls back shows the vendor
it is on now); `args`, `kwargs`, `result` and `exception` are short reprs;
`retries` is the attempt number; `parent_id` the message that carried the job,
so the bell's page in Flower lists its jobs. They hold ids, vendor and model
names, numbers, an error's kind and its message (redacted when the error was
made): never a prompt, a reply or a key.

This module decides and holds no Celery; `workers.task_events` sends the events
through the worker's Celery event dispatcher, buffered and paced with Celery's own
(`workers.kombu_patches.consumer.EventPacer`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dispatcher.broker.messages import RunJob
from dispatcher.errors import DispatcherError
from dispatcher.models import Response as VendorResponse
from dispatcher.runner.types import Outcome

__all__ = [
    "JOB_TASK_PREFIX",
    "JobTaskEvents",
    "SendEvents",
    "TaskEvent",
    "TaskEventType",
    "end_events",
    "message_result",
    "start_events",
]

# A job's task name is this and its vendor: "job.openai".
JOB_TASK_PREFIX = "job."
# The most characters of an error message or a reason an event carries, as the
# messages' own results (Celery cuts a result's repr at 1 KB).
DETAIL_CHARS = 200
# A retry due sooner than this may start on another worker before this worker's
# paced flush (every 50 ms at most) publishes its task-retried, which Flower would
# then apply last, leaving a finished job shown as RETRY: such events go out at once.
URGENT_RETRY_S = 0.5
# Attempts remembered as started at most (for their runtime); an attempt cut short
# by a Redis outage never ends here, so the oldest beyond this are forgotten.
MAX_STARTED = 100_000
# Failed jobs a message's result names at most: enough to click through in Flower.
LISTED_FAILURES = 10


class TaskEventType(StrEnum):
    """The Celery task event types a job's attempt sends."""

    RECEIVED = "task-received"
    STARTED = "task-started"
    SUCCEEDED = "task-succeeded"
    FAILED = "task-failed"
    RETRIED = "task-retried"
    REVOKED = "task-revoked"


@dataclass(frozen=True)
class TaskEvent:
    """One task event: its type, the task id (the job id) and its other fields."""

    type: TaskEventType
    uuid: str
    fields: Mapping[str, Any] = field(default_factory=dict)


# Sends task events: (the events, in order; publish now rather than at the paced flush?)
SendEvents = Callable[[Sequence[TaskEvent], bool], None]


def _short(text: str) -> str:
    return text[:DETAIL_CHARS]


def _received(message: RunJob, model: str, parent_id: str | None) -> TaskEvent:
    kwargs: dict[str, Any] = {"vendor": message.vendor}
    if model:
        kwargs["model"] = model
    kwargs["attempt"] = message.attempt
    if message.batch:
        kwargs["batch"] = message.batch
    fields: dict[str, Any] = {
        "name": f"{JOB_TASK_PREFIX}{message.vendor}",
        "args": "()",
        "kwargs": repr(kwargs),
        "retries": message.attempt,
    }
    if parent_id:
        fields["parent_id"] = parent_id
    return TaskEvent(TaskEventType.RECEIVED, message.job_id, fields)


def start_events(message: RunJob, model: str, parent_id: str | None = None) -> list[TaskEvent]:
    """The events of an attempt that starts: `model` is the deployment's, for the vendor call."""
    return [
        _received(message, model, parent_id),
        TaskEvent(TaskEventType.STARTED, message.job_id),
    ]


def end_events(
    message: RunJob,
    outcome: Outcome,
    result: VendorResponse | Exception | None = None,
    *,
    started: bool,
    runtime_s: float | None = None,
    parent_id: str | None = None,
) -> list[TaskEvent]:
    """The events of an attempt's end: `result` is what its vendor call returned or raised.

    `started`: whether its start events were sent (if not, its task-received goes
    first). A skipped attempt that never started sends nothing.
    """
    job_id = message.job_id
    end: TaskEvent
    if outcome.kind == "succeeded":
        end = TaskEvent(TaskEventType.SUCCEEDED, job_id, _success(outcome, result, runtime_s))
    elif outcome.kind == "failed":
        kind = outcome.errors[0] if outcome.errors else "error"
        exception = _short(f"{kind}: {outcome.detail}")
        end = TaskEvent(TaskEventType.FAILED, job_id, {"exception": exception})
    elif outcome.kind == "rescheduled":
        end = TaskEvent(TaskEventType.RETRIED, job_id, {"exception": _retry_text(outcome, result)})
    elif started:  # claimed and called, but the job had ended meanwhile (cancelled)
        end = TaskEvent(
            TaskEventType.REVOKED, job_id, {"terminated": False, "signum": None, "expired": False}
        )
    else:
        return []
    if started:
        return [end]
    return [_received(message, "", parent_id), end]


def _success(
    outcome: Outcome, result: VendorResponse | Exception | None, runtime_s: float | None
) -> dict[str, Any]:
    if isinstance(result, VendorResponse):
        shown = {
            "vendor": result.vendor,
            "model": result.model,
            "latency_ms": round(result.latency_ms, 1),
        }
    else:
        shown = {"vendor": outcome.detail}
    fields: dict[str, Any] = {"result": repr(shown)}
    if runtime_s is not None:
        fields["runtime"] = runtime_s
    return fields


def _retry_text(outcome: Outcome, result: VendorResponse | Exception | None) -> str:
    """What a task-retried says: the failure's kind and message, and when and where next."""
    kind = result.kind if isinstance(result, DispatcherError) else "wait"
    nxt = outcome.next_message
    where = f" on {nxt.vendor}" if nxt is not None and nxt.vendor else ""
    return _short(f"{kind}: {outcome.detail} (next attempt in {outcome.delay_s:.3g} s{where})")


def message_result(ran: Iterable[tuple[str, Outcome]]) -> dict[str, Any]:
    """What a message that ran jobs returns (Flower shows it): outcomes counted, failures first.

    Each job is a task of its own in Flower; the message's result counts what its
    jobs came to and names the first `LISTED_FAILURES` that failed, so a message
    shown as SUCCESS (it was delivered and its jobs ran) does not hide them.
    """
    counts: dict[str, int] = {"failed": 0, "rescheduled": 0, "skipped": 0, "succeeded": 0}
    failed: list[str] = []
    for job_id, outcome in ran:
        counts[outcome.kind] += 1
        if outcome.kind == "failed" and len(failed) < LISTED_FAILURES:
            failed.append(job_id)
    summary: dict[str, Any] = {}
    for kind, count in counts.items():
        if count:
            summary[kind] = count
        if kind == "failed" and failed:
            summary["failed_jobs"] = failed
    return summary


class JobTaskEvents:
    """The runner's watcher: turns each attempt's start and end into task events for `send`.

    `parent` names the Celery task (message) running now, if any. Called from any
    task thread; remembers when each attempt started, for its runtime.
    """

    def __init__(
        self,
        send: SendEvents,
        *,
        parent: Callable[[], str | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send, self._parent, self._clock = send, parent, clock
        self._lock = threading.Lock()
        self._started: dict[str, tuple[int, float]] = {}  # job id -> (attempt, started at)

    def started(self, message: RunJob, model: str) -> None:
        """The attempt was claimed and its vendor is called next."""
        with self._lock:
            self._started.pop(message.job_id, None)  # to the end of the order: newest
            self._started[message.job_id] = (message.attempt, self._clock())
            if len(self._started) > MAX_STARTED:
                del self._started[next(iter(self._started))]
        self._send(start_events(message, model, self._parent()), False)

    def ended(
        self, message: RunJob, outcome: Outcome, result: VendorResponse | Exception | None
    ) -> None:
        """The attempt came to `outcome`; `result` is its vendor call's, if it made one."""
        with self._lock:
            began = self._started.pop(message.job_id, None)
        started = began is not None and began[0] == message.attempt
        runtime_s = self._clock() - began[1] if started and began is not None else None
        events = end_events(
            message,
            outcome,
            result,
            started=started,
            runtime_s=runtime_s,
            parent_id=None if started else self._parent(),
        )
        if events:
            urgent = outcome.kind == "rescheduled" and outcome.delay_s < URGENT_RETRY_S
            self._send(events, urgent)
