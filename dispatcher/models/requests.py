"""What a producer asks for: `Request`, its `Message`s and their `Role`s, and their limits."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, JsonValue, field_validator

from dispatcher.models.base import Name, NonEmptyStr, StrictModel, Text, VendorName

__all__ = [
    "DEFAULT_PRIORITY",
    "MAX_MAX_TOKENS",
    "MAX_PRIORITY",
    "MAX_STOP_SEQUENCES",
    "MAX_TIMEOUT_S",
    "RESERVED_BODY_FIELDS",
    "RESERVED_NESTED_FIELDS",
    "Message",
    "Request",
    "Role",
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


class Role(StrEnum):
    """Who wrote a message."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


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
