"""The one task: a thin shell that hands a message to the job runner."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready

from dispatcher.messages import RUN_JOB_TASK, RunJob
from workers.app import app
from workers.runtime import runtime

__all__ = ["run_job"]


@app.task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)  # type: ignore[untyped-decorator]
def run_job(
    job_id: str, attempt: int = 0, deployment: int = 0, retry: int = 0, vendor: str = ""
) -> dict[str, Any]:
    """Run one attempt of job `job_id`; retries and fallbacks are new messages."""
    message = RunJob.from_args(job_id, attempt, deployment, retry, vendor)
    outcome = runtime(app).runner.run(message)
    return {"outcome": outcome.kind, "detail": outcome.detail[:200]}


@worker_ready.connect  # type: ignore[untyped-decorator]
def start_health_checks(**_: Any) -> None:
    """Once the worker is ready, probe its vendors on a schedule (not on the first job)."""
    runtime(app).start_health_checks()
