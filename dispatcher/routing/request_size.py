"""The largest request a producer may submit (`LLMDISPATCH_MAX_REQUEST_BYTES`).

A job's request is kept whole in its Redis hash and read again by every attempt,
so its size is measured as the job store writes it: the bytes of its JSON. A
submit checks it before anything is written.
"""

from __future__ import annotations

from dispatcher.errors import InvalidRequest
from dispatcher.models import Request

__all__ = ["check_request_size", "request_size_problem"]


def request_size_problem(request: Request, max_bytes: int) -> str | None:
    """Why `request` is too large to submit (``request: ...``), or None when it fits."""
    size = len(request.model_dump_json().encode())
    if size <= max_bytes:
        return None
    return (
        f"request: {size:,} bytes is over the maximum request size of {max_bytes:,} bytes "
        "(LLMDISPATCH_MAX_REQUEST_BYTES); shorten the messages, or raise the maximum"
    )


def check_request_size(request: Request, max_bytes: int) -> None:
    """Raise `InvalidRequest` when `request`'s JSON is over `max_bytes` bytes."""
    problem = request_size_problem(request, max_bytes)
    if problem is not None:
        raise InvalidRequest(problem)
