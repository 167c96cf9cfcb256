"""What waiting for a job comes to: its response, its typed error raised, or a timeout naming it."""

from __future__ import annotations

from dispatcher.errors import DispatcherError, JobCancelled, error_from_dict
from dispatcher.models import JobError, JobRecord, JobStatus, Response

__all__ = ["outcome_response", "response_of", "timed_out"]


def response_of(record: JobRecord) -> Response:
    """The response of an ended job, or the job's typed error raised.

    Raises:
        JobCancelled: the job was cancelled.
        DispatcherError: the job failed; the subclass it failed with (e.g. `VendorAuthError`).
    """
    return outcome_response(record.job_id, record.status, record.response, record.error)


def outcome_response(
    job_id: str, status: JobStatus, response: Response | None, error: JobError | None
) -> Response:
    """`response_of` from an ended job's status, response and error alone."""
    if status is JobStatus.SUCCEEDED and response is not None:
        return response
    if status is JobStatus.CANCELLED:
        raise JobCancelled(f"job {job_id} was cancelled", job_id=job_id)
    if status is JobStatus.FAILED and error is not None:
        raise error_from_dict({**error.model_dump(), "job_id": job_id})
    raise DispatcherError(f"job {job_id} ended {status.value} without a result", job_id=job_id)


def timed_out(job_id: str, timeout_s: float) -> TimeoutError:
    """The error `wait` raises when the job has not ended in time; it names the job."""
    return TimeoutError(
        f"job {job_id} has not ended after {timeout_s:g} s; it is still queued or running: "
        "wait again, or cancel it"
    )
