"""The three messages the queues carry, and their task names, shared by producer and workers.

`RunJob` (task `dispatch.run_job`) runs one attempt of one job: a retry, a
fallback, a job sent again by the sweeper. `RunJobs` (`dispatch.run_jobs`)
starts many items of one batch. `RunQueued` (`dispatch.run_queued`), a bell,
tells a worker to take the jobs waiting in a lane's ready set: what a submit
sends.

A `RunJob` names a job and which attempt of it to run, never the prompt or a
secret (Flower shows task arguments). `attempt` numbers the messages of one
job: the store runs a message only if no newer one has taken over, so a
redelivered old message is skipped. `deployment` indexes the job's route
(0 is the primary, then the fallbacks); `retry` counts retries on it;
`vendor` names that deployment's vendor, so a worker can check the vendor's
state in the same Redis round trip that claims the job (and Flower shows
where a message is going). Messages without it (sent by an older version)
are still run: the worker reads the job's route first. `batch` names the
batch a job belongs to (empty for a job of its own), so the claim and the end
move the batch's counts in the same step.

Batch items go out many to a message (`RunJobs`, task `dispatch.run_jobs`): a
worker runs the items of one message concurrently, each as its own `RunJob`,
so a batch pays Celery's cost per message once for many items. Every item keeps
its own record; its retries and fallbacks are `RunJob` messages of their own.

A batch's messages for one vendor are numbered 0, 1, 2 ... (their items are
kept in Redis); only the first `window` are sent at once. A message sends
the one `window` places after it (`next_message`) once half of its items have
ended, before it is acknowledged, so each vendor holds about one to two windows
of a batch's messages at any time, not thousands: workers keep threads free for
interactive jobs, and any worker, even one started later, takes the batch's
next message.

A submit's job waits in its lane's ready set instead (`dispatcher.broker.ready_queue`):
the message is a bell (`RunQueued`, task `dispatch.run_queued`) that tells a
worker to take up to `TAKE_LIMIT` of the lane's jobs, most urgent first, and
run them as a batch message's items are run. A bell goes out only when none of
its priority is pending for the lane, so an idle lane's job still goes out at
once, while a backlog pays Celery's cost per message once per up to 50 jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "BATCH_MESSAGE_ITEMS",
    "RUN_JOBS_TASK",
    "RUN_JOB_TASK",
    "RUN_QUEUED_TASK",
    "TAKE_LIMIT",
    "RunJob",
    "RunJobs",
    "RunQueued",
]

# Items per batch message: Celery's cost per message is then small beside the
# items' own, and a message's items end close together.
BATCH_MESSAGE_ITEMS = 50
# Jobs a bell takes from its lane's ready set at most, for the same reason.
TAKE_LIMIT = 50

# Explicit and readable in Flower.
RUN_JOB_TASK = "dispatch.run_job"
RUN_JOBS_TASK = "dispatch.run_jobs"
RUN_QUEUED_TASK = "dispatch.run_queued"


@dataclass(frozen=True)
class RunJob:
    """Run attempt `attempt` of job `job_id` on route deployment `deployment`."""

    job_id: str
    attempt: int = 0
    deployment: int = 0
    retry: int = 0
    vendor: str = ""
    batch: str = ""
    # Not part of the message: set by the worker for a batch message's items on its
    # first delivery, which may only start a job still queued (see RunJobs).
    exclusive: bool = False
    # Not part of the message either: the job's deadline (epoch seconds), set by the
    # runner for the vendor call, which is cut when it passes (`call_vendor`).
    deadline: float | None = None

    def as_args(self) -> list[Any]:
        """The task's positional arguments, JSON-ready (the batch only when there is one)."""
        args: list[Any] = [self.job_id, self.attempt, self.deployment, self.retry, self.vendor]
        return [*args, self.batch] if self.batch else args

    @classmethod
    def from_args(  # noqa: PLR0917 - the task's positional arguments, as sent
        cls,
        job_id: str,
        attempt: int,
        deployment: int,
        retry: int,
        vendor: str = "",
        batch: str = "",
    ) -> RunJob:
        """The message a task was called with."""
        return cls(
            job_id, int(attempt), int(deployment), int(retry), str(vendor or ""), str(batch or "")
        )


@dataclass(frozen=True)
class RunJobs:
    """The first attempt of several new jobs of one batch, all on `vendor`.

    `next_message`: the number of the batch's message for `vendor` to send once
    this one is done (-1: none), and `window` how far each step goes.
    """

    vendor: str
    batch: str
    job_ids: tuple[str, ...]
    next_message: int = -1
    window: int = 0

    def as_args(self) -> list[Any]:
        """The task's positional arguments, JSON-ready."""
        return [self.vendor, self.batch, list(self.job_ids), self.next_message, self.window]

    @classmethod
    def from_args(
        cls,
        vendor: str,
        batch: str,
        job_ids: list[str],
        next_message: int = -1,
        window: int = 0,
    ) -> RunJobs:
        """The message a task was called with."""
        ids = tuple(str(job_id) for job_id in job_ids)
        return cls(str(vendor), str(batch), ids, int(next_message), int(window))

    def successor(self, job_ids: list[str]) -> RunJobs:
        """The message `next_message`, holding `job_ids`."""
        return RunJobs(
            self.vendor,
            self.batch,
            tuple(job_ids),
            self.next_message + self.window,
            self.window,
        )

    def messages(self, *, redelivered: bool = False) -> list[RunJob]:
        """One `RunJob` per item: attempt 0 on the route's first deployment.

        A message delivered for the first time may only start items still queued:
        should it be a copy (a message sends its successor again when it is itself
        delivered again, after a worker died), the items another copy already runs
        are left to it. A redelivered message adopts the items its dead worker had
        started.
        """
        return [
            RunJob(job_id, vendor=self.vendor, batch=self.batch, exclusive=not redelivered)
            for job_id in self.job_ids
        ]


@dataclass(frozen=True)
class RunQueued:
    """A bell: take up to `TAKE_LIMIT` jobs from lane `queue`'s ready set and run them.

    Their first attempt, on `vendor` (the lane's); `priority` is the Celery
    priority the bell was sent with, which its next bell keeps.
    """

    queue: str
    vendor: str
    priority: int = 0

    def as_args(self) -> list[Any]:
        """The task's positional arguments, JSON-ready."""
        return [self.queue, self.vendor, self.priority]

    @classmethod
    def from_args(cls, queue: str, vendor: str, priority: int = 0) -> RunQueued:
        """The message a task was called with."""
        return cls(str(queue), str(vendor), int(priority))

    def messages(self, job_ids: list[str], *, redelivered: bool = False) -> list[RunJob]:
        """One `RunJob` per job taken: attempt 0 on the route's first deployment.

        As for a batch message (`RunJobs.messages`): a first delivery may only start
        jobs still queued, a redelivered bell adopts those its dead worker started.
        """
        return [RunJob(job_id, vendor=self.vendor, exclusive=not redelivered) for job_id in job_ids]
