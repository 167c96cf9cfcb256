"""The one way a message reaches a queue: submits, batches, retries and repairs all send here.

A queue carries three messages (`dispatcher.broker.messages`): a lane's bell
(`RunQueued`), a job's own message (`RunJob`: a retry, a fallback, a wait, or a
submit with sent events on) and a batch message (`RunJobs`). `Outbox` writes
each in Celery's wire format itself (`dispatcher.broker.celery_wire`) and pushes
it onto its queue's Redis list, inside the caller's MULTI/EXEC when it is given
one, so a job or a batch and its message are written together or not at all.

A bell goes through the ready set's scripts (`dispatcher.broker.ready_queue`),
which push it only when the lane has none pending.

With `publish` given (a Celery app's `send_task`, which the producer and the
workers build when `LLMDISPATCH_SENT_EVENTS` asks for Celery's `task-sent`
events), job and batch messages go through Celery instead, after the write:
`in_transaction` is then False.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dispatcher.broker.celery_config import celery_priority
from dispatcher.broker.celery_wire import TaskMessages
from dispatcher.broker.messages import RUN_JOB_TASK, RUN_JOBS_TASK, RunJob, RunJobs, RunQueued
from dispatcher.broker.ready_queue import Bell
from dispatcher.routing.router import vendor_of_queue

if TYPE_CHECKING:
    import redis

    from dispatcher.broker.ready_queue import ReadyQueue

__all__ = ["Outbox", "Publish"]

Publish = Callable[[str, list[Any], str, int, float], None]
"""Sends through Celery: `publish(task, args, queue, celery_priority, delay_s)`."""


class Outbox:
    """Puts messages on queues; thread-safe, one per process is enough."""

    def __init__(
        self, client: redis.Redis, ready: ReadyQueue, *, publish: Publish | None = None
    ) -> None:
        self.redis = client
        self.ready = ready
        self.wire = TaskMessages()
        self._publish = publish

    @property
    def in_transaction(self) -> bool:
        """Whether a message can be written in its job's or batch's own MULTI/EXEC."""
        return self._publish is None

    def queue_job(self, pipeline: Any, job_id: str, queue: str, priority: int) -> None:
        """Add a submitted job to its lane's ready set in `pipeline`, with a bell unless
        one of its priority is pending (`dispatcher.broker.ready_queue`)."""
        pri = celery_priority(priority)
        bell = self.bell(RunQueued(queue, vendor_of_queue(queue), pri))
        self.ready.enqueue(pipeline, job_id, queue, pri, bell)

    def send_job(self, message: RunJob, queue: str, priority: int, delay_s: float = 0.0) -> None:
        """Send a job's own message to `queue` with the job's `priority`, held back
        `delay_s` by the worker that receives it."""
        pri = celery_priority(priority)
        if self._publish is not None:
            self._publish(RUN_JOB_TASK, message.as_args(), queue, pri, delay_s)
            return
        self.redis.lpush(*self.wire.run_job(message, queue, pri, delay_s))

    def send_jobs(self, message: RunJobs, queue: str, pipeline: Any = None) -> None:
        """Send a batch message to `queue` (a batch lane), in `pipeline` when given."""
        if self._publish is not None and pipeline is None:
            self._publish(RUN_JOBS_TASK, message.as_args(), queue, 0, 0.0)
            return
        (pipeline if pipeline is not None else self.redis).lpush(
            *self.wire.run_jobs(message, queue)
        )

    def bell(self, message: RunQueued) -> Bell:
        """A bell like `message`, with a task id of its own, ready to push."""
        return Bell(*self.wire.run_queued(message))

    def ring(self, queue: str, celery_priority: int) -> None:
        """Send a bell for lane `queue` whether or not one is pending (the sweeper's repair)."""
        message = RunQueued(queue, vendor_of_queue(queue), celery_priority)
        self.ready.ring(queue, celery_priority, self.bell(message))
