"""How the dispatcher routes and recovers: routing rules, retries, the circuit breaker,
and the cost and latency preferences, as the configuration states them."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from dispatcher.models import StrictModel

__all__ = [
    "BackoffStrategy",
    "CircuitBreaker",
    "CostOptimization",
    "LatencyOptimization",
    "LeastBusy",
    "RetryPolicy",
    "RoutingCondition",
    "RoutingRule",
]


class RoutingCondition(StrictModel):
    """When a routing rule applies; every condition given must hold (`condition_matches`)."""

    model_config = ConfigDict(frozen=True)

    model_pattern: str | None = Field(default=None, description="Glob on the requested model.")
    max_tokens: int | None = Field(
        default=None, gt=0, description="Requests whose max_tokens is set and at most this."
    )
    temperature: float | None = Field(
        default=None, ge=0.0, le=2.0, description="Requests whose temperature is at most this."
    )
    user: str | None = Field(default=None, description="Glob on the request's user.")


class RoutingRule(StrictModel):
    """Send matching requests to a vendor (the seed's routing rule)."""

    model_config = ConfigDict(frozen=True)

    name: str | None = None
    condition: RoutingCondition = Field(default_factory=RoutingCondition)
    vendor: str
    priority: int = Field(default=0, description="Rules with higher priority are tried first.")
    enabled: bool = True


class BackoffStrategy(StrEnum):
    """How the wait grows between retries (see `backoff.backoff_delay_s`)."""

    FIXED = "fixed"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"
    JITTER = "jitter"


# The official OpenAI and Anthropic SDKs start at 0.5 s and cap at 8 s.
DEFAULT_INITIAL_DELAY_S = 0.5
DEFAULT_MAX_DELAY_S = 8.0
DEFAULT_MAX_RETRIES = 3


class RetryPolicy(StrictModel):
    """When and how long to wait before trying a vendor again."""

    model_config = ConfigDict(frozen=True)

    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0, le=100)
    backoff: BackoffStrategy = BackoffStrategy.JITTER
    initial_delay_s: float = Field(default=DEFAULT_INITIAL_DELAY_S, gt=0.0)
    max_delay_s: float = Field(default=DEFAULT_MAX_DELAY_S, gt=0.0)
    multiplier: float = Field(
        default=2.0, ge=1.0, le=10.0, description="Growth factor of exponential waits."
    )
    retry_on: frozenset[Literal["rate_limited", "unavailable", "timeout", "circuit_open"]] = Field(
        default=frozenset({"rate_limited", "unavailable", "timeout", "circuit_open"}),
        description="Kinds retried on the same vendor; other retryable ones fall back at once.",
    )

    @model_validator(mode="after")
    def _max_delay_not_below_initial(self) -> Self:
        if self.max_delay_s < self.initial_delay_s:
            raise ValueError(
                f"max_delay_s ({self.max_delay_s}) must be at least "
                f"initial_delay_s ({self.initial_delay_s})"
            )
        return self


# The seed's defaults: five failures in a row open a vendor's circuit for 30 s.
DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_RESET_TIMEOUT_S = 30.0


class CircuitBreaker(StrictModel):
    """When a vendor's shared circuit opens, and how long until one probe may try it."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    failure_threshold: int = Field(
        default=DEFAULT_FAILURE_THRESHOLD,
        ge=1,
        description="Failures in a row (5xx, 529, timeouts, broken streams) that open it.",
    )
    reset_timeout_s: float = Field(
        default=DEFAULT_RESET_TIMEOUT_S,
        gt=0.0,
        description="How long it stays open before one probe call may go (half-open).",
    )


class CostOptimization(StrictModel):
    """Prefer cheap vendors, and refuse requests whose estimate is over a maximum."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = False
    max_cost_usd: float | None = Field(default=None, gt=0.0, description="Per request.")
    prefer_cheap: bool = True
    vendor_costs: dict[str, Annotated[float, Field(ge=0.0)]] = Field(
        default_factory=dict,
        description="USD per million tokens, for vendors without a price for the model.",
    )


class LeastBusy(StrictModel):
    """Prefer the vendor with the least work per unit of weight: queued plus running jobs."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = False


class LatencyOptimization(StrictModel):
    """Prefer fast vendors by observed latency, and avoid those slower than a maximum."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = False
    max_latency_ms: float | None = Field(default=None, gt=0.0)
    prefer_fast: bool = True
    latency_weights: dict[str, Annotated[float, Field(gt=0.0)]] = Field(
        default_factory=dict,
        description="Multiplies a vendor's observed latency when ranking; 1 when absent.",
    )
