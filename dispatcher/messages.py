"""The one message the queue carries, and its task name, shared by producer and workers.

A message names a job and which attempt of it to run, never the prompt or a
secret (Flower shows task arguments). `attempt` numbers the messages of one
job: the store runs a message only if no newer one has taken over, so a
redelivered old message is skipped. `deployment` indexes the job's route
(0 is the primary, then the fallbacks); `retry` counts retries on it;
`vendor` names that deployment's vendor, so a worker can check the vendor's
state in the same Redis round trip that claims the job (and Flower shows
where a message is going). Messages without it (sent by an older version)
are still run: the worker reads the job's route first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["RUN_JOB_TASK", "RunJob"]

# Explicit and readable in Flower.
RUN_JOB_TASK = "dispatch.run_job"


@dataclass(frozen=True)
class RunJob:
    """Run attempt `attempt` of job `job_id` on route deployment `deployment`."""

    job_id: str
    attempt: int = 0
    deployment: int = 0
    retry: int = 0
    vendor: str = ""

    def as_args(self) -> list[Any]:
        """The task's positional arguments, JSON-ready."""
        return [self.job_id, self.attempt, self.deployment, self.retry, self.vendor]

    @classmethod
    def from_args(
        cls, job_id: str, attempt: int, deployment: int, retry: int, vendor: str = ""
    ) -> RunJob:
        """The message a task was called with."""
        return cls(job_id, int(attempt), int(deployment), int(retry), str(vendor or ""))
