"""Jobs and stream events as Redis holds them, read back into our models.

`record_from_hash` builds a `JobRecord` from a job's hash and event list;
`JobGlance` is the little of it a stream's follower looks at while the job runs;
`parse_stream_entry` and `stream_event_body` read and write the entries of a
job's stream buffer; `terminal_stream_body` is the `done` or `error` event the
FINISH script emits when a streamed job ends.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dispatcher.errors import DispatcherError, JobCancelled
from dispatcher.models import (
    JobError,
    JobEvent,
    JobRecord,
    JobStatus,
    Request,
    Response,
    Route,
    StreamEvent,
    StreamEventType,
    Usage,
)
from dispatcher.state.redis_values import at as _at
from dispatcher.state.redis_values import decoded as _decoded

__all__ = [
    "GLANCE_FIELDS",
    "JobGlance",
    "parse_stream_entry",
    "record_from_hash",
    "stream_event_body",
    "terminal_stream_body",
]

GLANCE_FIELDS = ("status", "started_at", "route")
"""The job hash's fields a glance reads (`JobGlance.from_fields`)."""


@dataclass(frozen=True)
class JobGlance:
    """A job's status, whether it ever started, and its queue: what following its stream
    checks while it runs, read without parsing its request, reply or history."""

    status: JobStatus
    started: bool
    queue: str | None = None

    @classmethod
    def of(cls, record: JobRecord) -> JobGlance:
        queue = record.route.queue if record.route else None
        return cls(record.status, record.started_at is not None, queue)

    @classmethod
    def from_fields(cls, status: str, started_at: str | None, route: str | None) -> JobGlance:
        """From the `GLANCE_FIELDS` of the job's hash, in that order."""
        queue = json.loads(route).get("queue") if route else None
        return cls(JobStatus(status), started_at not in (None, ""), queue)


def record_from_hash(job_id: str, fields: Mapping[str, str], events: list[str]) -> JobRecord:
    """A `JobRecord` from the job hash and its event list."""

    def number(name: str) -> float | None:
        value = fields.get(name)
        return float(value) if value not in (None, "") else None

    def moment(name: str) -> datetime | None:
        value = number(name)
        return _at(value) if value is not None else None

    def model(name: str, cls: Any) -> Any:
        value = fields.get(name)
        return cls.model_validate_json(value) if value else None

    return JobRecord(
        job_id=job_id,
        request=Request.model_validate_json(fields["request"]),
        route=model("route", Route),
        status=JobStatus(fields["status"]),
        attempts=int(fields.get("attempts", 0)),
        attempt=int(fields.get("attempt", 0)),
        events=[JobEvent.model_validate_json(e) for e in events],
        response=model("response", Response),
        error=model("error", JobError),
        batch_id=fields.get("batch_id"),
        created_at=moment("created_at") or _at(0),
        started_at=moment("started_at"),
        finished_at=moment("finished_at"),
        deadline_at=moment("deadline_at"),
        queue_wait_ms=number("queue_wait_ms"),
        vendor_latency_ms=number("vendor_latency_ms"),
        total_ms=number("total_ms"),
        usage=model("usage", Usage),
        cost_usd=number("cost_usd") or 0.0,
    )


def parse_stream_entry(fields: Mapping[Any, Any] | None) -> StreamEvent:
    """The event held by one entry of a job's stream buffer."""
    decoded = _decoded(fields or {})
    return StreamEvent.model_validate_json(decoded["e"])


def stream_event_body(fields: Mapping[str, Any]) -> str:
    """A stream event's JSON without its opening brace: the scripts prepend `{"seq":N,`."""
    return json.dumps(fields, separators=(",", ":"))[1:]


def terminal_stream_body(
    job_id: str,
    status: JobStatus,
    response: Response | None,
    error: DispatcherError | None,
) -> str:
    """The one terminal event of a streamed job: `done` with its reply, or `error`."""
    if status is JobStatus.SUCCEEDED and response is not None:
        return stream_event_body(
            {
                "type": StreamEventType.DONE.value,
                "job_id": job_id,
                "vendor": response.vendor,
                "model": response.model,
                "finish_reason": response.finish_reason.value,
                "usage": response.usage.model_dump(),
                "cost_usd": response.cost_usd,
            }
        )
    if error is None:
        error = JobCancelled(f"job {job_id} was cancelled", job_id=job_id)
    return stream_event_body(
        {"type": StreamEventType.ERROR.value, "job_id": job_id, "error": error.to_dict()}
    )
