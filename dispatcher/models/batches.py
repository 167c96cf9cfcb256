"""A batch as callers see it: its counts by state, its record, and each item's result."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field

from dispatcher.models.base import StrictModel
from dispatcher.models.jobs import JobError, JobStatus
from dispatcher.models.responses import Response

__all__ = ["BatchCounts", "BatchItem", "BatchRecord"]


class BatchCounts(StrictModel):
    """How many of a batch's items are in each state; they add up to `total`."""

    model_config = ConfigDict(frozen=True)

    total: int = Field(default=0, ge=0)
    queued: int = Field(default=0, ge=0)
    running: int = Field(default=0, ge=0)
    succeeded: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    cancelled: int = Field(default=0, ge=0)

    @property
    def ended(self) -> int:
        """Items that reached a terminal state."""
        return self.succeeded + self.failed + self.cancelled

    @property
    def pending(self) -> int:
        """Items still queued or running."""
        return self.queued + self.running


class BatchRecord(StrictModel):
    """A batch as it stands: counts by state, times, tokens and cost so far, an ETA.

    `eta_s` is the time left at the rate items have ended since the batch
    started (None before the first one ended, 0 once every item has ended).
    """

    batch_id: str
    counts: BatchCounts
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancelled_at: datetime | None = None
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0.0)
    eta_s: float | None = Field(default=None, ge=0.0)
    metadata: dict[str, str] = Field(default_factory=dict)

    @property
    def done(self) -> bool:
        """True once every item has ended."""
        return self.counts.ended >= self.counts.total


class BatchItem(StrictModel):
    """One item of a batch's results, in input order: its response or its typed error.

    `status` is the item's job status; an item whose record expired has status
    None and an error of kind `expired`.
    """

    index: int = Field(ge=0, description="Position in the input, from 0.")
    custom_id: str
    job_id: str
    status: JobStatus | None = None
    attempts: int = Field(default=0, ge=0, description="Vendor calls the item started.")
    response: Response | None = None
    error: JobError | None = None
