"""What comes back: a whole `Response` with its `Usage`, or a stream of `Chunk`s and events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Self

from pydantic import ConfigDict, Field, JsonValue, model_validator

from dispatcher.models.base import StrictModel, utc_now
from dispatcher.models.requests import Message, Role
from dispatcher.models.tools import ToolCall, ToolCallDelta

__all__ = [
    "Chunk",
    "FinishReason",
    "Response",
    "StreamEvent",
    "StreamEventType",
    "Usage",
]


class FinishReason(StrEnum):
    """Why generation stopped, mapped from each vendor's own words to one common set."""

    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    TOOL_CALLS = "tool_calls"
    ERROR = "error"


class Usage(StrictModel):
    """Token counts, as the vendor reported them.

    `cached_prompt_tokens` is the part of `prompt_tokens` served from the
    vendor's prompt cache; `reasoning_tokens` is the part of
    `completion_tokens` spent on hidden reasoning. Both are 0 when the vendor
    does not say.
    """

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)
    cached_prompt_tokens: int = Field(
        default=0, ge=0, description="The part of prompt_tokens served from the prompt cache."
    )
    reasoning_tokens: int = Field(
        default=0, ge=0, description="The part of completion_tokens spent on reasoning."
    )

    @model_validator(mode="after")
    def _total_defaults_to_sum(self) -> Self:
        if self.total_tokens == 0 and (self.prompt_tokens or self.completion_tokens):
            # Frozen: fill the derived field through the validator's own instance.
            object.__setattr__(self, "total_tokens", self.prompt_tokens + self.completion_tokens)
        return self


class Response(StrictModel):
    """A completed reply.

    `tool_calls` holds the calls the model asked for (finish reason
    `tool_calls`); `parsed` the reply's JSON when the request asked for a JSON
    response format (None otherwise). `to_message()` is the assistant message
    to send back in the next turn.
    """

    model_config = ConfigDict(frozen=True)

    content: str
    tool_calls: list[ToolCall] = Field(
        default_factory=list, description="The tool calls the model asked for, in order."
    )
    parsed: JsonValue = Field(
        default=None, description="The reply's JSON value, for a JSON response format."
    )
    vendor_state: dict[str, JsonValue] | None = Field(
        default=None, description="Vendor data the next turn must hand back (to_message keeps it)."
    )
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

    def to_message(self) -> Message:
        """This reply as the assistant message of the conversation's next request."""
        return Message(
            role=Role.ASSISTANT,
            content=self.content or None,
            tool_calls=list(self.tool_calls) or None,
            vendor_state=self.vendor_state,
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
    tool_calls: list[ToolCallDelta] | None = Field(
        default=None, description="On `chunk`: pieces of the reply's tool calls, in order."
    )
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
