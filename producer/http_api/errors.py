"""Our errors as OpenAI's HTTP errors, so the official SDKs raise their own typed exceptions.

OpenAI's error body is ``{"error": {"message", "type", "param", "code"}}``. The
status decides what an SDK raises (400 BadRequestError, 401 AuthenticationError,
404 NotFoundError, 409 ConflictError, 429 RateLimitError, 5xx
InternalServerError) and what it retries (408, 409, 429 and 5xx, honouring
Retry-After): so a final error is never a 5xx, and a passing one always is.

| ours | status | type / code |
| --- | --- | --- |
| InvalidRequest, ContentFiltered, BudgetExceeded, NoRoute | 400 | invalid_request_error |
| JobNotFound, BatchNotFound | 404 | invalid_request_error / not_found |
| JobCancelled | 409 | invalid_request_error / cancelled |
| VendorRateLimited (retries spent) | 429, Retry-After | rate_limit_error / rate_limit_exceeded |
| VendorQuotaExceeded | 429 | insufficient_quota |
| VendorUnavailable, StreamBroken, CircuitOpen | 503 | server_error |
| StoreUnavailable (Redis unreachable) | 503 | server_error / store_unavailable |
| VendorTimeout, DeadlineExceeded, a wait that ran out | 504 | server_error / timeout |
| VendorAuthError, InvalidVendorOutput (the vendor's side) | 502 | server_error |
| anything else | 500 | server_error |
"""

from __future__ import annotations

import math
from typing import Any

from fastapi.responses import JSONResponse

from dispatcher.errors import (
    BudgetExceeded,
    CircuitOpen,
    ContentFiltered,
    DeadlineExceeded,
    DispatcherError,
    InvalidRequest,
    InvalidVendorOutput,
    JobCancelled,
    JobNotFound,
    NoRoute,
    StoreUnavailable,
    VendorAuthError,
    VendorQuotaExceeded,
    VendorRateLimited,
    VendorTimeout,
    VendorUnavailable,
)
from dispatcher.redaction import redact
from dispatcher.state.keys import valid_job_id

__all__ = ["JOB_ID_HEADER", "api_error", "error_object", "error_response", "status_of"]

# Every answer about a job names it here.
JOB_ID_HEADER = "x-llmdispatch-job-id"

# (class, status, type, code), the first that matches wins.
_MAPPING: list[tuple[type[Exception], int, str, str | None]] = [
    (JobNotFound, 404, "invalid_request_error", "not_found"),
    (JobCancelled, 409, "invalid_request_error", "cancelled"),
    (VendorQuotaExceeded, 429, "insufficient_quota", "insufficient_quota"),
    (VendorRateLimited, 429, "rate_limit_error", "rate_limit_exceeded"),
    (DeadlineExceeded, 504, "server_error", "timeout"),
    (VendorTimeout, 504, "server_error", "timeout"),
    (StoreUnavailable, 503, "server_error", "store_unavailable"),
    (CircuitOpen, 503, "server_error", "vendor_unavailable"),
    (VendorUnavailable, 503, "server_error", "vendor_unavailable"),
    (VendorAuthError, 502, "server_error", "vendor_auth_error"),
    (InvalidVendorOutput, 502, "server_error", "invalid_vendor_output"),
    (NoRoute, 400, "invalid_request_error", "no_route"),
    (BudgetExceeded, 400, "invalid_request_error", "budget_exceeded"),
    (ContentFiltered, 400, "invalid_request_error", "content_filter"),
    (InvalidRequest, 400, "invalid_request_error", None),
    # The answer's wait ended before the job did (`wait`'s TimeoutError): the job goes on.
    (TimeoutError, 504, "server_error", "timeout"),
]


def api_error(
    status: int,
    message: str,
    *,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error answer in OpenAI's shape (the message redacted of any secret)."""
    body: dict[str, Any] = {
        "error": {"message": redact(message), "type": kind, "param": param, "code": code}
    }
    return JSONResponse(body, status_code=status, headers=headers)


def status_of(error: BaseException) -> tuple[int, str, str | None]:
    """The HTTP status, OpenAI error type and code for one of our errors."""
    for cls, status, kind, code in _MAPPING:
        if isinstance(error, cls):
            return status, kind, code or getattr(error, "kind", None)
    return 500, "server_error", getattr(error, "kind", "internal_error")


def error_object(error: BaseException) -> tuple[int, dict[str, Any]]:
    """The HTTP status of `error`, and its OpenAI error object (`message`, `type`, `param`,
    `code`; the message redacted, and no internals for an error not ours)."""
    status, kind, code = status_of(error)
    if isinstance(error, DispatcherError):
        message = error.message
    elif isinstance(error, TimeoutError):
        message = str(error) or "timed out"
    else:
        message = "internal error (the server's log says more)"
    return status, {"message": redact(message), "type": kind, "param": None, "code": code}


def error_response(error: BaseException, *, job_id: str | None = None) -> JSONResponse:
    """`error` as OpenAI's error answer, with Retry-After on a 429 and the job's id."""
    status, body = error_object(error)
    headers: dict[str, str] = {}
    if job_id and valid_job_id(job_id):  # never an id the caller made up (it may not encode)
        headers[JOB_ID_HEADER] = job_id
    if status == 429:
        wait = getattr(error, "retry_after_s", None)
        headers["retry-after"] = str(max(1, math.ceil(wait))) if wait else "1"
    return JSONResponse({"error": body}, status_code=status, headers=headers)
