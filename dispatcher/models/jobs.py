"""A job and where it goes: `Deployment`, `Route`, `JobStatus`, its history and its record."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

from dispatcher.models.base import StrictModel, VendorName, utc_now
from dispatcher.models.requests import DEFAULT_PRIORITY, MAX_PRIORITY, Request
from dispatcher.models.responses import Response, Usage

__all__ = [
    "Deployment",
    "JobError",
    "JobEvent",
    "JobEventKind",
    "JobRecord",
    "JobStatus",
    "Route",
]


class Deployment(StrictModel):
    """A concrete place to run a request: a vendor and the model name it knows."""

    model_config = ConfigDict(frozen=True)

    vendor: VendorName
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class Route(StrictModel):
    """Where a job goes: the router's decision, carried by the job and its messages."""

    model_config = ConfigDict(frozen=True)

    vendor: VendorName
    model: str
    fallbacks: list[Deployment] = Field(default_factory=list)
    queue: str
    priority: int = Field(default=DEFAULT_PRIORITY, ge=0, le=MAX_PRIORITY)
    reason: str = Field(default="", description="Why the router chose this vendor.")

    @property
    def deployments(self) -> list[Deployment]:
        """The primary deployment followed by the fallbacks, in the order to try them."""
        # Both fields were validated with the route; a hot path reads this per message.
        return [Deployment.model_construct(vendor=self.vendor, model=self.model), *self.fallbacks]


class JobStatus(StrEnum):
    """Where a job is in its life; the last three are terminal."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True once the job can no longer change."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobEventKind(StrEnum):
    """What happened to a job, as recorded in its history."""

    QUEUED = "queued"
    STARTED = "started"
    RETRY = "retry"
    REROUTED = "rerouted"
    # Its message was lost by the broker and the sweeper sent it again.
    REQUEUED = "requeued"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobEvent(StrictModel):
    """One entry of a job's history."""

    model_config = ConfigDict(frozen=True)

    kind: JobEventKind
    at: datetime = Field(default_factory=utc_now)
    attempt: int = Field(default=0, ge=0)
    vendor: str | None = None
    reason: str | None = None
    delay_s: float | None = Field(default=None, ge=0.0)
    from_vendor: str | None = None
    to_vendor: str | None = None


class JobError(StrictModel):
    """A typed error as stored with a job (see `errors.error_from_dict` to raise it)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    kind: str
    message: str
    retryable: bool = False
    vendor: str | None = None
    status_code: int | None = None
    job_id: str | None = None


class JobRecord(StrictModel):
    """Everything known about one job; the job store in Redis is its source of truth."""

    job_id: str
    request: Request
    route: Route | None = None
    status: JobStatus = JobStatus.QUEUED
    attempts: int = Field(default=0, ge=0, description="Vendor calls started so far.")
    attempt: int = Field(
        default=0, ge=0, description="The number of the message currently allowed to run."
    )
    events: list[JobEvent] = Field(default_factory=list)
    response: Response | None = None
    error: JobError | None = None
    batch_id: str | None = None
    created_at: datetime = Field(default_factory=utc_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    deadline_at: datetime | None = Field(
        default=None, description="When the job fails instead of retrying (from timeout_s)."
    )
    queue_wait_ms: float | None = Field(default=None, ge=0.0)
    vendor_latency_ms: float | None = Field(default=None, ge=0.0)
    total_ms: float | None = Field(default=None, ge=0.0)
    usage: Usage | None = None
    cost_usd: float = Field(default=0.0, ge=0.0)
