"""What waiting for a job comes to: its response, its typed error raised, or a timeout naming it."""

from __future__ import annotations

from dispatcher.errors import DispatcherError, JobCancelled, error_from_dict
from dispatcher.models import JobRecord, JobStatus, Response

__all__ = ["response_of", "timed_out"]


def response_of(record: JobRecord) -> Response:
    """The response of an ended job, or the job's typed error raised.

    Raises:
        JobCancelled: the job was cancelled.
        DispatcherError: the job failed; the subclass it failed with (e.g. `VendorAuthError`).
    """
    if record.status is JobStatus.SUCCEEDED and record.response is not None:
        return record.response
    if record.status is JobStatus.CANCELLED:
        raise JobCancelled(f"job {record.job_id} was cancelled", job_id=record.job_id)
    if record.status is JobStatus.FAILED and record.error is not None:
        raise error_from_dict({**record.error.model_dump(), "job_id": record.job_id})
    raise DispatcherError(
        f"job {record.job_id} ended {record.status.value} without a result", job_id=record.job_id
    )


def timed_out(job_id: str, timeout_s: float) -> TimeoutError:
    """The error `wait` raises when the job has not ended in time; it names the job."""
    return TimeoutError(
        f"job {job_id} has not ended after {timeout_s:g} s; it is still queued or running: "
        "wait again, or cancel it"
    )
