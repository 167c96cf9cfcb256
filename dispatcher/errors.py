"""One exception tree for everything the dispatcher can refuse or fail at.

Grouped by what the caller (a worker, or a user's program) should do next::

    DispatcherError                  base; .retryable, .vendor, .status_code, .job_id
    ├── VendorRateLimited            retry after .retry_after_s (429)
    ├── VendorUnavailable            retry with backoff (5xx, Anthropic's 529, overloaded)
    │   └── StreamBroken             the stream ended before the vendor's terminator
    ├── VendorTimeout                retry with backoff (connect/read timeout, 408, 504)
    │   └── DeadlineExceeded         final: the job's deadline passed (before or during a call)
    ├── CircuitOpen                  retry later or fall back; the vendor is cooling down
    ├── VendorAuthError              final: fix the key or its permissions (401, 403)
    ├── VendorQuotaExceeded          final: billing or quota exhausted
    ├── ContentFiltered              final: the vendor refused the content
    ├── InvalidVendorOutput          final: the reply is not the JSON asked for (.raw_text)
    ├── InvalidRequest (ValueError)  final: fix the request (ours, or the vendor's 400/404/422)
    ├── NoRoute                      final: no configured vendor can take the request
    ├── BudgetExceeded               final: every route costs more than the allowed maximum
    ├── JobNotFound (LookupError)    final: no job with that id (never existed, or expired)
    │   └── BatchNotFound            final: no batch with that id
    ├── VendorNotFound (LookupError) final: no configured vendor has that name
    ├── JobCancelled                 final: the job was cancelled before it ended
    ├── StoreUnavailable (ConnectionError)  retry with the same idempotency key: no Redis
    └── ConfigError (ValueError)     final: the configuration is invalid; lists every problem

Workers ask an error what to do (`error.retryable`), never parse its message.
Every message passes through `redaction.redact`, so no error text ever carries
a secret, even when a vendor echoes our request headers back in its body.
Errors travel through Redis as plain dicts (`to_dict` / `error_from_dict`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from dispatcher.redaction import redact

__all__ = [
    "BatchNotFound",
    "BudgetExceeded",
    "CircuitOpen",
    "ConfigError",
    "ContentFiltered",
    "DeadlineExceeded",
    "DispatcherError",
    "InvalidRequest",
    "InvalidVendorOutput",
    "JobCancelled",
    "JobNotFound",
    "NoRoute",
    "StoreUnavailable",
    "StreamBroken",
    "VendorAuthError",
    "VendorNotFound",
    "VendorQuotaExceeded",
    "VendorRateLimited",
    "VendorTimeout",
    "VendorUnavailable",
    "error_from_dict",
]


class DispatcherError(Exception):
    """Base of every error the dispatcher raises; says whether retrying can help."""

    kind: ClassVar[str] = "dispatcher_error"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        vendor: str | None = None,
        status_code: int | None = None,
        job_id: str | None = None,
    ) -> None:
        self.message = redact(message)
        self.vendor = vendor
        self.status_code = status_code
        self.job_id = job_id
        super().__init__(self.message)

    def __str__(self) -> str:
        context = [
            f"{name}={value}"
            for name, value in (
                ("vendor", self.vendor),
                ("status", self.status_code),
                ("job", self.job_id),
            )
            if value is not None
        ]
        return f"{self.message} ({', '.join(context)})" if context else self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors do not survive pickling by default; Celery and
        # multiprocessing pickle exceptions, so rebuild from the dict form.
        return (error_from_dict, (self.to_dict(),))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for job records and stream events."""
        return {
            "kind": self.kind,
            "message": self.message,
            "retryable": self.retryable,
            "vendor": self.vendor,
            "status_code": self.status_code,
            "job_id": self.job_id,
        }


class VendorRateLimited(DispatcherError):
    """The vendor said 429: wait `retry_after_s` (when it told us) before trying again."""

    kind = "rate_limited"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        vendor: str | None = None,
        status_code: int | None = 429,
        job_id: str | None = None,
    ) -> None:
        if retry_after_s is not None and retry_after_s < 0:
            raise ValueError(f"retry_after_s must be >= 0, got {retry_after_s}")
        self.retry_after_s = retry_after_s
        super().__init__(message, vendor=vendor, status_code=status_code, job_id=job_id)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "retry_after_s": self.retry_after_s}


class VendorUnavailable(DispatcherError):
    """The vendor failed or is overloaded (5xx, 529, broken stream): retry with backoff."""

    kind = "unavailable"
    retryable = True


class StreamBroken(VendorUnavailable):
    """A stream ended before the vendor's end marker; the text so far is not an answer.

    `partial` says whether any text had already been delivered, so a retry knows
    that subscribers must be told to start over.
    """

    kind = "stream_broken"

    def __init__(
        self,
        message: str,
        *,
        partial: bool = False,
        vendor: str | None = None,
        status_code: int | None = None,
        job_id: str | None = None,
    ) -> None:
        self.partial = partial
        super().__init__(message, vendor=vendor, status_code=status_code, job_id=job_id)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "partial": self.partial}


class VendorTimeout(DispatcherError):
    """The vendor did not answer in time (connect or read timeout, 408, 504)."""

    kind = "timeout"
    retryable = True


class DeadlineExceeded(VendorTimeout):
    """The job's deadline (`Request.timeout_s` after submit) passed: before it could run,
    before its next retry, or during a vendor call, which was cut there."""

    kind = "deadline_exceeded"
    retryable = False


class CircuitOpen(DispatcherError):
    """The vendor's circuit breaker is open: fall back, or retry once it half-opens."""

    kind = "circuit_open"
    retryable = True


class VendorAuthError(DispatcherError):
    """The vendor refused our credentials (401) or their permissions (403): fix the key."""

    kind = "auth"


class VendorQuotaExceeded(DispatcherError):
    """The vendor account's quota or billing limit is exhausted: retrying only burns time."""

    kind = "quota"


class ContentFiltered(DispatcherError):
    """The vendor's content filter refused the prompt or the reply."""

    kind = "content_filtered"


class InvalidVendorOutput(DispatcherError):
    """The vendor's reply is not what the request asked for: JSON that does not parse, or
    does not match a strict schema (of `response_format` or of a strict tool).

    `raw_text` keeps the text as the vendor wrote it. Asking again rarely helps
    (the same prompt tends to fail the same way), so it is final: change the
    prompt, the schema or the model.
    """

    kind = "invalid_output"

    def __init__(
        self,
        message: str,
        *,
        raw_text: str = "",
        vendor: str | None = None,
        status_code: int | None = None,
        job_id: str | None = None,
    ) -> None:
        self.raw_text = redact(raw_text)
        super().__init__(message, vendor=vendor, status_code=status_code, job_id=job_id)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "raw_text": self.raw_text}


class InvalidRequest(DispatcherError, ValueError):
    """The request is invalid, by our validation or the vendor's (400, 404, 422): fix it."""

    kind = "invalid_request"


class NoRoute(DispatcherError):
    """No configured vendor can take the request; `reasons` says why, vendor by vendor."""

    kind = "no_route"

    def __init__(
        self,
        message: str,
        *,
        reasons: dict[str, str] | None = None,
        job_id: str | None = None,
    ) -> None:
        self.reasons = dict(reasons or {})
        details = "; ".join(f"{vendor}: {why}" for vendor, why in sorted(self.reasons.items()))
        super().__init__(f"{message}: {details}" if details else message, job_id=job_id)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "reasons": self.reasons}


class BudgetExceeded(DispatcherError):
    """Every route's estimated cost is above the configured maximum."""

    kind = "budget_exceeded"

    def __init__(
        self,
        message: str,
        *,
        estimated_cost_usd: float | None = None,
        max_cost_usd: float | None = None,
        vendor: str | None = None,
        job_id: str | None = None,
    ) -> None:
        self.estimated_cost_usd = estimated_cost_usd
        self.max_cost_usd = max_cost_usd
        super().__init__(message, vendor=vendor, job_id=job_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "estimated_cost_usd": self.estimated_cost_usd,
            "max_cost_usd": self.max_cost_usd,
        }


class JobNotFound(DispatcherError, LookupError):
    """No job has that id: it never existed, or its record expired."""

    kind = "job_not_found"


class BatchNotFound(JobNotFound):
    """No batch has that id: it never existed, or its record expired."""

    kind = "batch_not_found"


class VendorNotFound(DispatcherError, LookupError):
    """No configured vendor has that name; the message lists the ones that are."""

    kind = "vendor_not_found"


class JobCancelled(DispatcherError):
    """The job was cancelled; it has no result."""

    kind = "cancelled"


class StoreUnavailable(DispatcherError, ConnectionError):
    """Redis (the job store and the queues) did not answer; try again when it is back.

    Raised to producers within the client's socket timeouts instead of hanging.
    A submit that fails so names the job (`job_id`) or batch (`batch_id`) it
    tried to write, and says whether it may have been written after all
    (`may_have_been_written`: the write went out and its reply was lost). To retry
    safely, submit again with the same `idempotency_key`: the same id comes back,
    and nothing runs twice.
    """

    kind = "store_unavailable"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        batch_id: str | None = None,
        may_have_been_written: bool = False,
    ) -> None:
        super().__init__(message, job_id=job_id)
        self.batch_id = batch_id
        self.may_have_been_written = may_have_been_written

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "batch_id": self.batch_id,
            "may_have_been_written": self.may_have_been_written,
        }


class ConfigError(DispatcherError, ValueError):
    """The configuration is invalid; `problems` lists every one, each with its path."""

    kind = "config"

    def __init__(self, problems: list[str]) -> None:
        self.problems = [redact(problem) for problem in problems]
        count = len(self.problems)
        heading = f"invalid configuration ({count} problem{'s' if count != 1 else ''})"
        super().__init__("\n  ".join([heading + ":", *self.problems]))

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "problems": self.problems}


_BY_KIND: dict[str, type[DispatcherError]] = {
    cls.kind: cls
    for cls in (
        DispatcherError,
        VendorRateLimited,
        VendorUnavailable,
        StreamBroken,
        VendorTimeout,
        DeadlineExceeded,
        CircuitOpen,
        VendorAuthError,
        VendorQuotaExceeded,
        ContentFiltered,
        InvalidVendorOutput,
        InvalidRequest,
        NoRoute,
        BudgetExceeded,
        JobNotFound,
        BatchNotFound,
        VendorNotFound,
        JobCancelled,
        StoreUnavailable,
        ConfigError,
    )
}


def error_from_dict(data: dict[str, Any]) -> DispatcherError:
    """Rebuild the typed error that `DispatcherError.to_dict` described."""
    cls = _BY_KIND.get(str(data.get("kind")), DispatcherError)
    message = str(data.get("message", ""))
    common: dict[str, Any] = {"job_id": data.get("job_id")}
    error: DispatcherError
    if cls is ConfigError:
        error = ConfigError(list(data.get("problems") or [message]))
    elif cls is NoRoute:
        # The message already lists the reasons; rebuild without repeating them.
        error = NoRoute.__new__(NoRoute)
        error.reasons = dict(data.get("reasons") or {})
        DispatcherError.__init__(error, message, **common)
    elif cls is VendorRateLimited:
        error = VendorRateLimited(
            message,
            retry_after_s=data.get("retry_after_s"),
            vendor=data.get("vendor"),
            status_code=data.get("status_code"),
            **common,
        )
    elif cls is StreamBroken:
        error = StreamBroken(
            message,
            partial=bool(data.get("partial")),
            vendor=data.get("vendor"),
            status_code=data.get("status_code"),
            **common,
        )
    elif cls is InvalidVendorOutput:
        error = InvalidVendorOutput(
            message,
            raw_text=str(data.get("raw_text") or ""),
            vendor=data.get("vendor"),
            status_code=data.get("status_code"),
            **common,
        )
    elif cls is StoreUnavailable:
        error = StoreUnavailable(
            message,
            batch_id=data.get("batch_id"),
            may_have_been_written=bool(data.get("may_have_been_written")),
            **common,
        )
    elif cls is BudgetExceeded:
        error = BudgetExceeded(
            message,
            estimated_cost_usd=data.get("estimated_cost_usd"),
            max_cost_usd=data.get("max_cost_usd"),
            vendor=data.get("vendor"),
            **common,
        )
    else:
        error = cls(
            message, vendor=data.get("vendor"), status_code=data.get("status_code"), **common
        )
    return error
