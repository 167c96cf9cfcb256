"""Statistics without Redis: buckets, percentiles, counters and the `Stats` built from them."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from dispatcher.models import JobStatus, Stats, Usage, VendorStats
from dispatcher.state.stats import (
    ALL_VENDORS,
    BUCKET_BOUNDS_MS,
    bucket_of,
    build_stats,
    finish_increments,
    percentile,
)

FINITE_BOUNDS = [bound for bound in BUCKET_BOUNDS_MS if bound != float("inf")]
INF_BUCKET = str(len(BUCKET_BOUNDS_MS) - 1)


def histogram(values: list[float]) -> dict[str, str]:
    """Values bucketed as the store does, counts as Redis returns them (text)."""
    return {bucket: str(n) for bucket, n in Counter(bucket_of(v) for v in values).items()}


def summed(*increments: list[tuple[str, float]]) -> dict[str, str]:
    """The counters hash after Redis added every increment (HINCRBYFLOAT), as text."""
    totals: defaultdict[str, float] = defaultdict(float)
    for pairs in increments:
        for field, amount in pairs:
            totals[field] += amount
    return {field: repr(total) for field, total in totals.items()}


# --- bucket_of ---------------------------------------------------------------------


def test_bounds_rise_strictly_and_end_with_infinity() -> None:
    assert list(BUCKET_BOUNDS_MS) == sorted(set(BUCKET_BOUNDS_MS))
    assert BUCKET_BOUNDS_MS[-1] == float("inf")


@pytest.mark.parametrize(("index", "bound"), list(enumerate(FINITE_BOUNDS)))
def test_value_exactly_on_a_bound_falls_in_that_bounds_bucket(index: int, bound: float) -> None:
    assert bucket_of(bound) == str(index)


@pytest.mark.parametrize(("index", "bound"), list(enumerate(FINITE_BOUNDS)))
def test_value_just_above_a_bound_falls_in_the_next_bucket(index: int, bound: float) -> None:
    assert bucket_of(bound + 0.001) == str(index + 1)


def test_zero_falls_in_the_first_bucket() -> None:
    assert bucket_of(0.0) == "0"


@pytest.mark.parametrize("value_ms", [600_000.001, 3_600_000.0, 1e12, float("inf")])
def test_value_above_the_last_finite_bound_falls_in_the_inf_bucket(value_ms: float) -> None:
    assert bucket_of(value_ms) == INF_BUCKET


# --- percentile --------------------------------------------------------------------


@pytest.mark.parametrize(
    "buckets", [{}, {"3": 0}, {"3": "0", "7": "0"}], ids=["no-fields", "zero", "zero-text"]
)
def test_percentile_of_an_empty_histogram_is_zero(buckets: dict[str, int | str]) -> None:
    assert percentile(buckets, 0.5) == 0.0
    assert percentile(buckets, 0.99) == 0.0


@pytest.mark.parametrize(
    ("fraction", "expected_ms"),
    [(0.25, 31.25), (0.5, 37.5), (0.75, 43.75), (1.0, 50.0)],
)
def test_percentile_interpolates_linearly_within_a_single_bucket(
    fraction: float, expected_ms: float
) -> None:
    # Bucket 5 holds (25, 50] ms.
    assert percentile({"5": 4}, fraction) == expected_ms
    assert percentile({"5": "4"}, fraction) == expected_ms


def test_percentile_of_the_first_bucket_starts_at_zero() -> None:
    assert percentile({"0": 2}, 0.5) == 0.5


def test_percentile_in_the_inf_bucket_is_the_last_finite_bound() -> None:
    assert percentile({INF_BUCKET: 3}, 0.5) == FINITE_BOUNDS[-1]


def test_percentile_skips_empty_buckets_between_samples() -> None:
    # Half the samples in (1, 2.5] ms, half in (5000, 10000] ms; the median is the top of the first.
    buckets = {"1": 5, "2": 0, "12": 5}

    assert percentile(buckets, 0.5) == 2.5
    assert percentile(buckets, 0.6) == 6_000.0


@pytest.mark.parametrize("fraction", [0.50, 0.95, 0.99])
def test_percentile_of_a_known_distribution_falls_in_the_true_percentiles_bucket(
    fraction: float,
) -> None:
    # 1000 latencies spread over four decades, denser at the low end, as LLM calls are.
    samples = sorted(10.0 + (i / 1000) ** 3 * 60_000 for i in range(1, 1001))
    true_value = samples[round(fraction * len(samples)) - 1]

    estimate = percentile(histogram(samples), fraction)

    assert bucket_of(estimate) == bucket_of(true_value)


def test_percentiles_of_a_known_distribution_are_ordered_and_within_its_range() -> None:
    samples = [12.0] * 50 + [180.0] * 45 + [900.0] * 4 + [30_000.0]
    buckets = histogram(samples)

    p50, p95, p99 = (percentile(buckets, f) for f in (0.50, 0.95, 0.99))

    # 50 in (10, 25], 45 in (100, 250], 4 in (500, 1000], 1 in (25000, 50000].
    assert (p50, p95, p99) == (25.0, 250.0, 1_000.0)
    assert percentile(buckets, 1.0) == 50_000.0


# --- finish_increments -------------------------------------------------------------


def test_cancelled_job_counts_only_as_cancelled() -> None:
    pairs = finish_increments(
        JobStatus.CANCELLED,
        "openai",
        latency_ms=120.0,
        usage=Usage(prompt_tokens=3, completion_tokens=4),
        cost_usd=0.5,
    )

    assert pairs == [("t:cancelled", 1)]


def test_success_counts_request_outcome_latency_tokens_and_cost_for_total_and_vendor() -> None:
    pairs = finish_increments(
        JobStatus.SUCCEEDED,
        "openai",
        latency_ms=120.5,
        usage=Usage(prompt_tokens=12, completion_tokens=30),
        cost_usd=0.0042,
    )

    per_scope = {
        "requests": 1,
        "successes": 1,
        "latency_ms_sum": 120.5,
        "latency_count": 1,
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "cost_usd": 0.0042,
    }
    assert len(pairs) == len(dict(pairs))
    assert dict(pairs) == {
        **{f"t:{name}": amount for name, amount in per_scope.items()},
        **{f"v:openai:{name}": amount for name, amount in per_scope.items()},
    }


def test_failure_without_a_response_counts_request_and_failure_for_total_and_vendor() -> None:
    pairs = finish_increments(JobStatus.FAILED, "anthropic")

    assert dict(pairs) == {
        "t:requests": 1,
        "t:failures": 1,
        "v:anthropic:requests": 1,
        "v:anthropic:failures": 1,
    }


def test_failure_without_a_vendor_counts_only_in_the_total() -> None:
    assert dict(finish_increments(JobStatus.FAILED, None)) == {"t:requests": 1, "t:failures": 1}


def test_free_success_adds_no_cost_counter() -> None:
    fields = dict(finish_increments(JobStatus.SUCCEEDED, "ollama", latency_ms=5.0, cost_usd=0.0))

    assert not any(field.endswith(":cost_usd") for field in fields)
    assert (fields["t:successes"], fields["v:ollama:successes"]) == (1, 1)


def test_an_unpriced_success_counts_in_unpriced_calls_for_total_and_vendor() -> None:
    fields = dict(finish_increments(JobStatus.SUCCEEDED, "local", cost_usd=0.0, unpriced=True))

    assert (fields["t:unpriced_calls"], fields["v:local:unpriced_calls"]) == (1, 1)
    priced = dict(finish_increments(JobStatus.SUCCEEDED, "local", cost_usd=0.0))
    assert not any(field.endswith(":unpriced_calls") for field in priced)


def test_stats_report_unpriced_calls_in_all_and_per_vendor() -> None:
    counters = {
        "t:requests": "3",
        "t:successes": "3",
        "t:unpriced_calls": "2",
        "v:local:requests": "2",
        "v:local:unpriced_calls": "2",
        "v:openai:requests": "1",
    }

    stats = build_stats(counters, {}, {})

    assert stats.unpriced_calls == 2
    assert stats.vendor_stats["local"].unpriced_calls == 2
    assert stats.vendor_stats["openai"].unpriced_calls == 0


# --- build_stats -------------------------------------------------------------------


def test_stats_of_no_counters_are_all_zero() -> None:
    stats = build_stats({}, {}, {})

    assert stats == Stats()
    assert stats.success_rate() == 0.0


def test_stats_average_latency_queue_wait_and_cost_over_their_own_counts() -> None:
    counters = {
        "t:requests": "4",
        "t:successes": "3",
        "t:failures": "1",
        "t:cancelled": "2",
        "t:latency_ms_sum": "900",
        "t:latency_count": "3",
        "t:queue_wait_ms_sum": "1500.5",
        "t:queue_wait_count": "6",
        "t:cost_usd": "0.02",
    }

    stats = build_stats(counters, {}, {})

    # Latency counts calls that answered (3), queue wait every start (6), cost every request (4).
    assert stats.average_latency_ms == 300.0
    assert stats.average_queue_wait_ms == pytest.approx(1500.5 / 6)
    assert stats.average_cost_usd == pytest.approx(0.005)
    assert (stats.total_requests, stats.cancelled_requests) == (4, 2)
    assert stats.success_rate() == 75.0


def test_stats_break_down_per_vendor_from_the_counters_of_each_job_end() -> None:
    openai_latencies = [120.0, 250.0, 400.0]
    anthropic_latencies = [1_800.0]
    ends = [
        finish_increments(
            JobStatus.SUCCEEDED,
            "openai",
            latency_ms=latency,
            usage=Usage(prompt_tokens=10, completion_tokens=20),
            cost_usd=0.001,
        )
        for latency in openai_latencies
    ]
    ends.append(
        finish_increments(
            JobStatus.SUCCEEDED,
            "anthropic",
            latency_ms=anthropic_latencies[0],
            usage=Usage(prompt_tokens=100, completion_tokens=5),
            cost_usd=0.003,
        )
    )
    ends += [finish_increments(JobStatus.FAILED, "anthropic") for _ in range(3)]
    ends.append(finish_increments(JobStatus.CANCELLED, None))
    retries = [("t:retries", 2.0), ("v:openai:retries", 1.0), ("v:mistral:retries", 1.0)]
    fallbacks = [("t:fallbacks", 1.0), ("v:openai:fallbacks", 1.0)]
    latency = {
        ALL_VENDORS: histogram(openai_latencies + anthropic_latencies),
        "openai": histogram(openai_latencies),
        "anthropic": histogram(anthropic_latencies),
    }

    stats = build_stats(summed(*ends, retries, fallbacks), latency, {})

    assert set(stats.vendor_stats) == {"anthropic", "mistral", "openai"}
    openai = stats.vendor_stats["openai"]
    assert (openai.requests, openai.successes, openai.failures) == (3, 3, 0)
    assert (openai.retries, openai.fallbacks) == (1, 1)
    assert (openai.prompt_tokens, openai.completion_tokens) == (30, 60)
    assert openai.total_cost_usd == pytest.approx(0.003)
    assert openai.avg_latency_ms == pytest.approx(sum(openai_latencies) / 3)
    assert openai.p50_latency_ms == percentile(latency["openai"], 0.5)
    assert openai.success_rate() == 100.0
    anthropic = stats.vendor_stats["anthropic"]
    assert (anthropic.requests, anthropic.successes, anthropic.failures) == (4, 1, 3)
    assert anthropic.avg_latency_ms == 1_800.0
    assert anthropic.p99_latency_ms == percentile(latency["anthropic"], 0.99)
    assert anthropic.success_rate() == 25.0
    # A vendor that was only retried on appears, with no requests and a 0 % success rate.
    assert stats.vendor_stats["mistral"] == VendorStats(retries=1)
    assert stats.vendor_stats["mistral"].success_rate() == 0.0
    assert (stats.total_requests, stats.successful_requests, stats.failed_requests) == (7, 4, 3)
    assert (stats.cancelled_requests, stats.retries, stats.fallbacks) == (1, 2, 1)
    assert stats.p95_latency_ms == percentile(latency[ALL_VENDORS], 0.95)
    assert stats.success_rate() == pytest.approx(100.0 * 4 / 7)


def test_stats_read_queue_wait_percentiles_from_the_queue_wait_histogram() -> None:
    waits = [5.0, 8.0, 40.0, 3_000.0]
    queue_wait = histogram(waits)
    counters = {"t:queue_wait_ms_sum": repr(sum(waits)), "t:queue_wait_count": "4"}

    stats = build_stats(counters, {}, queue_wait)

    assert stats.average_queue_wait_ms == pytest.approx(sum(waits) / 4)
    assert (stats.p50_queue_wait_ms, stats.p95_queue_wait_ms, stats.p99_queue_wait_ms) == (
        percentile(queue_wait, 0.50),
        percentile(queue_wait, 0.95),
        percentile(queue_wait, 0.99),
    )
    assert stats.p50_latency_ms == 0.0
