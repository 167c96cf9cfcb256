"""The tasks: thin shells that hand messages to the job runner.

`dispatch.run_job` runs one attempt of one job; `dispatch.run_jobs` runs the
first attempt of many new items of a batch, concurrently (see `RunJobs`);
`dispatch.run_queued` takes submitted jobs from a lane's ready set and runs
them likewise (see `RunQueued` and `dispatcher.broker.ready_queue`).
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready, worker_shutdown

from dispatcher.broker.messages import (
    RUN_JOB_TASK,
    RUN_JOBS_TASK,
    RUN_QUEUED_TASK,
    RunJob,
    RunJobs,
    RunQueued,
)
from dispatcher.runner.job_tasks import message_result
from workers.app import app
from workers.runtime import runtime

__all__ = ["run_job", "run_jobs", "run_queued", "start_schedules", "stop_heartbeat"]


@app.task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)  # type: ignore[untyped-decorator]
def run_job(  # noqa: PLR0917 - a message's arguments are positional (RunJob.as_args)
    job_id: str,
    attempt: int = 0,
    deployment: int = 0,
    retry: int = 0,
    vendor: str = "",
    batch: str = "",
) -> dict[str, Any]:
    """Run one attempt of job `job_id`; retries and fallbacks are new messages."""
    message = RunJob.from_args(job_id, attempt, deployment, retry, vendor, batch)
    outcome = runtime(app).run_message(message)
    return {"outcome": outcome.kind, "detail": outcome.detail[:200]}


@app.task(  # type: ignore[untyped-decorator]
    name=RUN_JOBS_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def run_jobs(  # noqa: PLR0917 - a message's arguments are positional (RunJobs.as_args)
    task: Any,
    vendor: str,
    batch: str,
    job_ids: list[str],
    next_message: int = -1,
    window: int = 0,
) -> dict[str, Any]:
    """Run the first attempt of batch `batch`'s items `job_ids` on `vendor`, concurrently."""
    message = RunJobs.from_args(vendor, batch, job_ids, next_message, window)
    # kombu marks a message it restored after a worker died (its visibility timeout).
    redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
    outcomes = runtime(app).run_batch_message(message, redelivered=redelivered)
    # What Flower shows as the result; each item is a task of its own there too.
    return message_result(zip(message.job_ids, outcomes, strict=True))


@app.task(  # type: ignore[untyped-decorator]
    name=RUN_QUEUED_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def run_queued(task: Any, queue: str, vendor: str, priority: int = 0) -> dict[str, Any]:
    """Take up to 50 jobs from lane `queue`'s ready set and run their first attempt."""
    message = RunQueued.from_args(queue, vendor, priority)
    redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
    ran = runtime(app).run_queued_message(message, task.request.id, redelivered=redelivered)
    # What Flower shows as the result; each job is a task of its own there too.
    return message_result(ran)


@worker_ready.connect  # type: ignore[untyped-decorator]
def start_schedules(sender: Any = None, **_: Any) -> None:
    """Once the worker is ready: its heartbeat, health probes and sweeps, on a schedule."""
    runtime(app).start_heartbeat(getattr(sender, "hostname", None) or "worker")
    runtime(app).start_health_checks()
    runtime(app).start_sweeper()


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def stop_heartbeat(**_: Any) -> None:
    """A clean stop (its tasks finished) leaves the worker registry: nothing to take back."""
    runtime(app).stop_heartbeat()
