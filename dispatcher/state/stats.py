"""Statistics as counters and histograms in Redis, and the `Stats` built from them.

Counters live in one hash, each field `t:<name>` (all vendors) or
`v:<vendor>:<name>`; the job store adds to them in the same atomic script that
ends a job, so the figures always match the job records. Latencies go into
histograms with fixed buckets, enough for p50/p95/p99 without keeping samples.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

from dispatcher.models import JobStatus, Stats, Usage, VendorStats

__all__ = [
    "ALL_VENDORS",
    "BUCKET_BOUNDS_MS",
    "LATENCY",
    "QUEUE_WAIT",
    "bucket_of",
    "build_stats",
    "finish_increments",
    "latency_average_field",
    "percentile",
]

LATENCY = "latency"
QUEUE_WAIT = "queue_wait"
ALL_VENDORS = "_all"

# Upper bounds (ms) from 1 ms to 10 minutes, roughly 1-2.5-5 per decade: an LLM call
# ranges from a cached 20 ms to several minutes.
BUCKET_BOUNDS_MS: tuple[float, ...] = (
    1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000,
    50_000, 100_000, 250_000, 600_000, float("inf"),
)  # fmt: skip


def latency_average_field(vendor: str) -> str:
    """The counters' field holding a vendor's moving average latency (ms), kept by FINISH."""
    return f"v:{vendor}:latency_ewma_ms"


def bucket_of(value_ms: float) -> str:
    """The histogram field a value falls in: the index of its upper bound."""
    return str(bisect.bisect_left(BUCKET_BOUNDS_MS, value_ms))


def percentile(buckets: Mapping[str, int | str], fraction: float) -> float:
    """The value below which `fraction` of samples fall, interpolated within a bucket."""
    counts = [int(buckets.get(str(i), 0)) for i in range(len(BUCKET_BOUNDS_MS))]
    total = sum(counts)
    if total == 0:
        return 0.0
    rank = fraction * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            lower = BUCKET_BOUNDS_MS[index - 1] if index else 0.0
            upper = BUCKET_BOUNDS_MS[index]
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return BUCKET_BOUNDS_MS[-2]


def finish_increments(
    status: JobStatus,
    vendor: str | None,
    *,
    latency_ms: float | None = None,
    usage: Usage | None = None,
    cost_usd: float = 0.0,
    unpriced: bool = False,
) -> list[tuple[str, float]]:
    """The counters a job's end adds to, for its final vendor and for all vendors.

    `unpriced`: the call succeeded but nothing prices its model, so its cost of 0
    is unknown rather than free; `unpriced_calls` counts it.
    """
    if status is JobStatus.CANCELLED:
        return [("t:cancelled", 1)]
    outcome = "successes" if status is JobStatus.SUCCEEDED else "failures"
    scopes = ["t"] + ([f"v:{vendor}"] if vendor else [])
    pairs: list[tuple[str, float]] = []
    for scope in scopes:
        pairs += [(f"{scope}:requests", 1), (f"{scope}:{outcome}", 1)]
        if latency_ms is not None:
            pairs += [(f"{scope}:latency_ms_sum", latency_ms), (f"{scope}:latency_count", 1)]
        if usage is not None:
            pairs += [
                (f"{scope}:prompt_tokens", usage.prompt_tokens),
                (f"{scope}:completion_tokens", usage.completion_tokens),
            ]
        if cost_usd:
            pairs.append((f"{scope}:cost_usd", cost_usd))
        if unpriced:
            pairs.append((f"{scope}:unpriced_calls", 1))
    return pairs


def build_stats(
    counters: Mapping[str, str],
    latency: Mapping[str, Mapping[str, str]],
    queue_wait: Mapping[str, str],
) -> Stats:
    """`Stats` from the counter hash and the histograms (latency per vendor and `_all`)."""

    def number(field: str) -> float:
        return float(counters.get(field, 0) or 0)

    def mean(total: str, count: str) -> float:
        return number(total) / number(count) if number(count) else 0.0

    vendors = sorted({f.split(":")[1] for f in counters if f.startswith("v:")})
    per_vendor = {}
    for vendor in vendors:
        scope = f"v:{vendor}"
        histogram = latency.get(vendor, {})
        per_vendor[vendor] = VendorStats(
            requests=int(number(f"{scope}:requests")),
            successes=int(number(f"{scope}:successes")),
            failures=int(number(f"{scope}:failures")),
            retries=int(number(f"{scope}:retries")),
            fallbacks=int(number(f"{scope}:fallbacks")),
            prompt_tokens=int(number(f"{scope}:prompt_tokens")),
            completion_tokens=int(number(f"{scope}:completion_tokens")),
            total_cost_usd=number(f"{scope}:cost_usd"),
            unpriced_calls=int(number(f"{scope}:unpriced_calls")),
            avg_latency_ms=mean(f"{scope}:latency_ms_sum", f"{scope}:latency_count"),
            p50_latency_ms=percentile(histogram, 0.50),
            p95_latency_ms=percentile(histogram, 0.95),
            p99_latency_ms=percentile(histogram, 0.99),
        )
    overall = latency.get(ALL_VENDORS, {})
    requests = int(number("t:requests"))
    return Stats(
        total_requests=requests,
        successful_requests=int(number("t:successes")),
        failed_requests=int(number("t:failures")),
        cancelled_requests=int(number("t:cancelled")),
        retries=int(number("t:retries")),
        fallbacks=int(number("t:fallbacks")),
        prompt_tokens=int(number("t:prompt_tokens")),
        completion_tokens=int(number("t:completion_tokens")),
        average_latency_ms=mean("t:latency_ms_sum", "t:latency_count"),
        p50_latency_ms=percentile(overall, 0.50),
        p95_latency_ms=percentile(overall, 0.95),
        p99_latency_ms=percentile(overall, 0.99),
        average_queue_wait_ms=mean("t:queue_wait_ms_sum", "t:queue_wait_count"),
        p50_queue_wait_ms=percentile(queue_wait, 0.50),
        p95_queue_wait_ms=percentile(queue_wait, 0.95),
        p99_queue_wait_ms=percentile(queue_wait, 0.99),
        total_cost_usd=number("t:cost_usd"),
        average_cost_usd=number("t:cost_usd") / requests if requests else 0.0,
        unpriced_calls=int(number("t:unpriced_calls")),
        vendor_stats=per_vendor,
    )
