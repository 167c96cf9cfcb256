"""The data every part of the dispatcher exchanges: requests, responses, chunks, jobs, stats.

All models forbid unknown fields, and an unknown field's error names it and
lists the accepted ones, so a typo (`max_token=`) fails loudly instead of being
dropped. Value-like models are frozen. Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from dispatcher.config.problems import custom_error, rebuild

__all__ = [
    "RESERVED_BODY_FIELDS",
    "BatchCounts",
    "BatchItem",
    "BatchRecord",
    "Chunk",
    "CircuitState",
    "Deployment",
    "FinishReason",
    "HealthStatus",
    "JobError",
    "JobEvent",
    "JobEventKind",
    "JobRecord",
    "JobStatus",
    "Message",
    "Request",
    "Response",
    "Role",
    "Route",
    "Stats",
    "StreamEvent",
    "StreamEventType",
    "StrictModel",
    "Usage",
    "VendorName",
    "VendorStats",
    "utc_now",
]

# Vendor names become queue names (`llm.<vendor>`) and Redis key parts, so they
# are kept to a small, safe alphabet.
VendorName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", strict=True)]


def _no_lone_surrogates(value: str) -> str:
    """Text that UTF-8 can carry: a lone surrogate (from a JSON `\\ud800`) cannot."""
    if any("\ud800" <= char <= "\udfff" for char in value):
        raise ValueError("contains a lone surrogate (not valid Unicode text)")
    return value


def _no_control_characters(value: str) -> str:
    """A name printed on one line: no control characters (CR, LF, NUL, ESC, ...)."""
    _no_lone_surrogates(value)
    if any(char < " " or "\x7f" <= char <= "\x9f" for char in value):
        raise ValueError("contains a control character")
    return value


# Free text (a prompt, a stop sequence, a metadata value): any character but lone surrogates.
Text = Annotated[str, AfterValidator(_no_lone_surrogates)]
NonEmptyStr = Annotated[str, StringConstraints(min_length=1), AfterValidator(_no_lone_surrogates)]
# Names shown in lists, logs and URLs (a model, a user, a metadata key): one line of text.
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=256), AfterValidator(_no_control_characters)
]

# Inside Gemini's `generationConfig` and Ollama's `options`: the same fields again.
RESERVED_NESTED_FIELDS = frozenset(
    {
        "maxOutputTokens", "temperature", "topP", "stopSequences", "candidateCount",
        "num_predict", "top_p", "stop",
    }
)  # fmt: skip
# Body fields the dispatcher writes from the request's own fields, in some vendor's
# wire format: `extra_body` may not set them, or the job record, the router's checks,
# limits, prices and `max_cost_usd` would no longer describe what was sent.
RESERVED_BODY_FIELDS = frozenset(
    {
        "model", "messages", "stream", "stream_options", "max_tokens",
        "max_completion_tokens", "max_output_tokens", "temperature", "top_p", "p", "stop",
        "stop_sequences", "system", "contents", "systemInstruction", "system_instruction",
        "user", "n", "candidateCount",
    }
)  # fmt: skip

# OpenAI, Anthropic and Cohere all cap stop sequences at 4 or fewer.
MAX_STOP_SEQUENCES = 4
# Celery's Redis transport emulates priorities 0-9; we use the same range.
MAX_PRIORITY = 9
DEFAULT_PRIORITY = 5
# No model writes anywhere near 2**31 tokens; a bigger max_tokens can only be a mistake,
# and would overflow cost estimates (floats) and vendors' 32-bit fields.
MAX_MAX_TOKENS = 2**31 - 1
# A year: far past any job's life (one that never ends expires after a week), and small
# enough that submit time plus the deadline is always a date a record can hold.
MAX_TIMEOUT_S = 365 * 86_400.0


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class StrictModel(BaseModel):
    """Base for our models: an unknown field is refused, naming the accepted ones."""

    # JSON has no infinity or NaN: such a value would silently become null in Redis.
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    @model_validator(mode="wrap")
    @classmethod
    def _name_accepted_fields(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # pydantic reports an unknown field at its own path beside every other error;
        # this only rewrites those messages so they list what would have been accepted.
        try:
            return handler(data)
        except ValidationError as exc:
            errors = exc.errors()
            unknown = {
                index: error
                for index, error in enumerate(errors)
                if error["type"] == "extra_forbidden" and len(error["loc"]) == 1
            }
            if not unknown:
                raise
            accepted = ", ".join(sorted(f.alias or n for n, f in cls.model_fields.items()))
            replace = {
                index: custom_error(
                    "unknown_field",
                    error["loc"],
                    f"unknown field {error['loc'][0]!r} for {cls.__name__}; "
                    f"accepted fields: {accepted}",
                    error["input"],
                )
                for index, error in unknown.items()
            }
            raise rebuild(cls.__name__, errors, replace=replace) from None


class Role(StrEnum):
    """Who wrote a message."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class FinishReason(StrEnum):
    """Why generation stopped, mapped from each vendor's own words to one common set."""

    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    TOOL_CALLS = "tool_calls"
    ERROR = "error"


class Message(StrictModel):
    """One turn of a conversation."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: NonEmptyStr


class Request(StrictModel):
    """A chat completion request, as a producer submits it."""

    model_config = ConfigDict(frozen=True)

    model: Name = Field(description="Model name, or the name of a configured model group.")
    messages: list[Message] = Field(min_length=1)
    # Strict: `True` is not a temperature, nor "9" a priority; JSON gives real numbers.
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, strict=True)
    max_tokens: int | None = Field(default=None, gt=0, le=MAX_MAX_TOKENS, strict=True)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0, strict=True)
    stream: bool = Field(default=False, strict=True)
    stop: list[NonEmptyStr] | None = Field(default=None, max_length=MAX_STOP_SEQUENCES)
    user: Name | None = None
    metadata: dict[Name, Text] = Field(default_factory=dict)
    vendor: VendorName | None = Field(
        default=None, description="Preferred vendor; used when it can take the request."
    )
    vendor_weights: dict[VendorName, Annotated[float, Field(ge=0.0)]] | None = Field(
        default=None,
        description="Per-request routing weights; only the vendors named here are chosen first.",
    )
    allow_fallback: bool = Field(
        default=True, strict=True, description="False: fail rather than move to another vendor."
    )
    priority: int = Field(default=DEFAULT_PRIORITY, ge=0, le=MAX_PRIORITY, strict=True)
    timeout_s: float | None = Field(
        default=None,
        gt=0.0,
        le=MAX_TIMEOUT_S,
        strict=True,
        description="Deadline for the whole job, counted from submit.",
    )
    extra_body: dict[Name, JsonValue] = Field(
        default_factory=dict,
        description="Merged untouched into the body sent to vendors that accept it; it may "
        "not set a field the dispatcher writes (model, messages, stream, max_tokens, ...).",
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _single_stop_string_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("extra_body")
    @classmethod
    def _extra_body_sets_no_field_we_write(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(RESERVED_BODY_FIELDS & set(value))
        reserved += [
            f"{outer}.{inner}"
            for outer in ("generationConfig", "options")
            if isinstance(value.get(outer), dict)
            for inner in sorted(RESERVED_NESTED_FIELDS & set(value[outer]))
        ]
        if reserved:
            raise ValueError(
                f"may not set {', '.join(map(repr, reserved))}: the dispatcher writes "
                "it from the request's own fields (model, messages, stream, max_tokens, "
                "temperature, top_p, stop, user)"
            )
        return value

    @field_validator("vendor_weights")
    @classmethod
    def _some_weight_is_positive(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and not any(weight > 0 for weight in value.values()):
            raise ValueError("at least one vendor weight must be greater than 0")
        return value


class Usage(StrictModel):
    """Token counts, as the vendor reported them."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _total_defaults_to_sum(self) -> Self:
        if self.total_tokens == 0 and (self.prompt_tokens or self.completion_tokens):
            # Frozen: fill the derived field through the validator's own instance.
            object.__setattr__(self, "total_tokens", self.prompt_tokens + self.completion_tokens)
        return self


class Response(StrictModel):
    """A completed reply."""

    model_config = ConfigDict(frozen=True)

    content: str
    usage: Usage = Field(default_factory=Usage)
    model: str
    vendor: str
    finish_reason: FinishReason = FinishReason.STOP
    created_at: datetime = Field(default_factory=utc_now)
    latency_ms: float = Field(default=0.0, ge=0.0)
    cost_usd: float = Field(default=0.0, ge=0.0)
    vendor_finish_reason: str | None = Field(
        default=None, description="The finish reason in the vendor's own words, for logs."
    )
    vendor_request_id: str | None = Field(
        default=None, description="The vendor's request id header, for support tickets."
    )


class Chunk(StrictModel):
    """One piece of a streamed reply; the last one carries finish reason and usage."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    seq: int = Field(ge=0)
    delta: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    emitted_at: datetime | None = Field(
        default=None, description="When the vendor's bytes for this chunk arrived."
    )


class StreamEventType(StrEnum):
    """What a message on a job's stream channel says."""

    CHUNK = "chunk"
    RESET = "reset"
    DONE = "done"
    ERROR = "error"

    @property
    def is_terminal(self) -> bool:
        """True for the one event that ends a stream."""
        return self in (StreamEventType.DONE, StreamEventType.ERROR)


class StreamEvent(StrictModel):
    """One message of a job's stream, as published and as kept for replay.

    `seq` rises by one per event across every attempt of the job. A `reset`
    means a new attempt starts over: discard the text received so far. `done`
    names the vendor and model that produced the reply, with its finish reason,
    usage and cost.
    """

    model_config = ConfigDict(frozen=True)

    seq: int = Field(ge=1)
    type: StreamEventType
    job_id: str
    attempt: int | None = Field(default=None, ge=0)
    delta: str | None = None
    emitted_at: float | None = Field(
        default=None, description="Epoch seconds when the vendor's bytes arrived."
    )
    vendor: str | None = Field(default=None, description="On `done`: the vendor that replied.")
    model: str | None = Field(default=None, description="On `done`: the model, as it answered.")
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    cost_usd: float | None = Field(default=None, ge=0.0)
    error: dict[str, Any] | None = Field(
        default=None, description="The typed error, as DispatcherError.to_dict() gives it."
    )


class HealthStatus(StrEnum):
    """A vendor's health, from its last probe."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class CircuitState(StrEnum):
    """A vendor's shared circuit breaker state."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


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


def _percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


class VendorStats(StrictModel):
    """Per-vendor counters, as in the seed design's statistics, plus tokens and tails.

    A job counts once, for the vendor that gave its final outcome; `retries`
    and `fallbacks` count the attempts that failed on this vendor along the way.
    """

    requests: int = Field(default=0, ge=0)
    successes: int = Field(default=0, ge=0)
    failures: int = Field(default=0, ge=0)
    retries: int = Field(default=0, ge=0)
    fallbacks: int = Field(default=0, ge=0, description="Jobs that moved away from it.")
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_cost_usd: float = Field(default=0.0, ge=0.0)
    avg_latency_ms: float = Field(default=0.0, ge=0.0)
    p50_latency_ms: float = Field(default=0.0, ge=0.0)
    p95_latency_ms: float = Field(default=0.0, ge=0.0)
    p99_latency_ms: float = Field(default=0.0, ge=0.0)

    def success_rate(self) -> float:
        """Percentage (0-100) of this vendor's requests that succeeded; 0 when none."""
        return _percent(self.successes, self.requests)


class Stats(StrictModel):
    """Totals across all vendors, with the per-vendor breakdown.

    `total_requests` counts jobs that succeeded or failed; cancelled jobs are
    counted apart. Latency is the vendor call's; queue wait runs from submit
    to the first start. Percentiles come from bucketed histograms.
    """

    total_requests: int = Field(default=0, ge=0)
    successful_requests: int = Field(default=0, ge=0)
    failed_requests: int = Field(default=0, ge=0)
    cancelled_requests: int = Field(default=0, ge=0)
    retries: int = Field(default=0, ge=0)
    fallbacks: int = Field(default=0, ge=0)
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    average_latency_ms: float = Field(default=0.0, ge=0.0)
    p50_latency_ms: float = Field(default=0.0, ge=0.0)
    p95_latency_ms: float = Field(default=0.0, ge=0.0)
    p99_latency_ms: float = Field(default=0.0, ge=0.0)
    average_queue_wait_ms: float = Field(default=0.0, ge=0.0)
    p50_queue_wait_ms: float = Field(default=0.0, ge=0.0)
    p95_queue_wait_ms: float = Field(default=0.0, ge=0.0)
    p99_queue_wait_ms: float = Field(default=0.0, ge=0.0)
    total_cost_usd: float = Field(default=0.0, ge=0.0)
    average_cost_usd: float = Field(default=0.0, ge=0.0)
    vendor_stats: dict[str, VendorStats] = Field(default_factory=dict)

    def success_rate(self) -> float:
        """Percentage (0-100) of requests that succeeded; 0 when there were none."""
        return _percent(self.successful_requests, self.total_requests)
