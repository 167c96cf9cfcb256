"""Counters and latency tails, in all and per vendor, as `client.stats()` reports them."""

from __future__ import annotations

from pydantic import Field

from dispatcher.models.base import StrictModel

__all__ = ["Stats", "VendorStats"]


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
    unpriced_calls: int = Field(
        default=0, ge=0, description="Successes whose model has no price: their cost is unknown."
    )
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
    unpriced_calls: int = Field(
        default=0,
        ge=0,
        description="Successes whose model has no price: `total_cost_usd` leaves them out.",
    )
    vendor_stats: dict[str, VendorStats] = Field(default_factory=dict)

    def success_rate(self) -> float:
        """Percentage (0-100) of requests that succeeded; 0 when there were none."""
        return _percent(self.successful_requests, self.total_requests)
