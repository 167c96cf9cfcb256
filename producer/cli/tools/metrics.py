"""Prometheus metrics read from Redis on every scrape: `DispatcherCollector`.

The exporter keeps no state of its own: each scrape reads the figures the
workers keep in Redis (the statistics hash, the histograms, the queues,
running sets, buckets, circuits and health checks), so any number of exporters
agree and a restart loses nothing. A scrape costs three pipelined round trips
(the figures, the circuits, the health checks), one more only when the
statistics name vendors the configuration no longer does.

| metric                                        | type      | labels                 |
| --------------------------------------------- | --------- | ---------------------- |
| `llmdispatch_queue_depth`                     | gauge     | vendor, lane           |
| `llmdispatch_in_flight`                       | gauge     | vendor                 |
| `llmdispatch_jobs_total`                      | counter   | vendor, outcome        |
| `llmdispatch_retries_total`                   | counter   | vendor                 |
| `llmdispatch_fallbacks_total`                 | counter   | vendor (fallen from)   |
| `llmdispatch_vendor_latency_seconds`          | histogram | vendor                 |
| `llmdispatch_queue_wait_seconds`              | histogram |                        |
| `llmdispatch_tokens_total`                    | counter   | vendor, kind           |
| `llmdispatch_cost_usd_total`                  | counter   | vendor                 |
| `llmdispatch_unpriced_calls_total`            | counter   | vendor                 |
| `llmdispatch_rate_limit`                      | gauge     | vendor, kind (rpm/tpm) |
| `llmdispatch_rate_limit_remaining`            | gauge     | vendor, kind (rpm/tpm) |
| `llmdispatch_circuit_state`                   | gauge     | vendor (0/1/2)         |
| `llmdispatch_vendor_healthy`                  | gauge     | vendor                 |
| `llmdispatch_redis_up`                        | gauge     |                        |
| `llmdispatch_scrape_errors_total`             | counter   |                        |

Cancelled jobs, and jobs that ended before reaching a vendor, count under
`vendor=""`: the statistics do not split them by vendor.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dispatcher.config.settings import Settings
from dispatcher.models import CircuitState, HealthStatus, JobStatus
from dispatcher.redaction import redact
from dispatcher.routing.router import batch_queue_for, queue_for
from dispatcher.state.redis_values import decoded as _decoded
from dispatcher.state.stats import BUCKET_BOUNDS_MS, LATENCY, QUEUE_WAIT
from dispatcher.state.store import JobStore
from dispatcher.state.traffic import WAITING_REPLIES, count_waiting, running_since, waiting_in
from producer.client import Client

__all__ = ["CIRCUIT_VALUES", "DispatcherCollector", "Snapshot", "bucket_level", "read_snapshot"]

logger = logging.getLogger(__name__)

PREFIX = "llmdispatch"
# What `llmdispatch_circuit_state` reports for each state: higher is worse.
CIRCUIT_VALUES = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}
LANES = ("interactive", "batch")
RATE_KINDS = ("rpm", "tpm")
TOKEN_KINDS = ("prompt", "completion")


@dataclass(frozen=True)
class Snapshot:
    """What one scrape read from Redis, keyed by vendor (and lane or kind)."""

    counters: Mapping[str, str]
    latency: Mapping[str, Mapping[str, str]]
    queue_wait: Mapping[str, str]
    queue_depth: Mapping[tuple[str, str], int]
    in_flight: Mapping[str, int]
    rate_limit: Mapping[tuple[str, str], int]
    rate_limit_remaining: Mapping[tuple[str, str], float]
    circuits: Mapping[str, CircuitState]
    healthy: Mapping[str, bool]

    def counter(self, field: str) -> float:
        """A field of the statistics hash; 0 when absent."""
        return float(self.counters.get(field, 0) or 0)

    def counted_vendors(self) -> list[str]:
        """The vendors the statistics name, sorted."""
        return _vendors_in(self.counters)


def bucket_level(
    tokens: str | bytes | None,
    ts: str | bytes | None,
    *,
    rate_per_s: float,
    size: float,
    now: float,
) -> float:
    """Tokens in a bucket now, refilled as the Lua `level()` does; full when it has no state.

    It may be negative: jobs charged in advance owe tokens that have not refilled yet.
    """
    if tokens is None:
        return size
    level = float(tokens)
    if ts is not None:
        level += max(0.0, now - float(ts)) * rate_per_s
    return min(size, level)


def read_snapshot(store: JobStore, settings: Settings) -> Snapshot:
    """Every figure the metrics show, in a few pipelined round trips."""
    keys, now = store.keys, store.now()
    enabled = settings.enabled_vendors()
    configured = sorted(settings.vendors)
    limits = [
        (name, kind, rate, size)
        for name, config in enabled.items()
        for kind, rate, size in config.limit.buckets()
    ]
    pipe = store.redis.pipeline(transaction=False)
    pipe.hgetall(keys.stats())
    pipe.hgetall(keys.histogram(QUEUE_WAIT))
    for name in configured:
        pipe.hgetall(keys.histogram(LATENCY, name))
    for name, config in enabled.items():
        for queue in (queue_for(name), batch_queue_for(name)):
            count_waiting(pipe, keys, queue)
        pipe.zcount(keys.running(name), running_since(config.timeout, now), "+inf")
    for name, kind, _, _ in limits:
        pipe.hmget(keys.limit(name, kind), "tokens", "ts")
    replies = iter(pipe.execute())

    # The replies come in the order the commands went: read them back the same way.
    counters = _decoded(next(replies))
    queue_wait = _decoded(next(replies))
    latency = {name: _decoded(next(replies)) for name in configured}
    queue_depth: dict[tuple[str, str], int] = {}
    in_flight: dict[str, int] = {}
    for name in enabled:
        for lane in LANES:
            queue_depth[name, lane] = waiting_in([next(replies) for _ in range(WAITING_REPLIES)])
        in_flight[name] = int(next(replies))
    remaining: dict[tuple[str, str], float] = {
        (name, kind): bucket_level(*next(replies), rate_per_s=rate, size=size, now=now)
        for name, kind, rate, size in limits
    }
    rate_limit = {
        (name, kind): limit
        for name, config in enabled.items()
        for kind, limit in zip(RATE_KINDS, (config.rpm, config.tpm), strict=True)
        if limit is not None
    }

    gone = [name for name in _vendors_in(counters) if name not in latency]
    if gone:  # vendors since removed from the configuration keep their histograms
        pipe = store.redis.pipeline(transaction=False)
        for name in gone:
            pipe.hgetall(keys.histogram(LATENCY, name))
        latency |= {name: _decoded(h) for name, h in zip(gone, pipe.execute(), strict=True)}

    names = sorted(enabled)
    breaker = settings.circuit_breaker
    views = store.circuits.states(names, breaker.reset_timeout_s) if breaker.enabled else {}
    health = store.health.latest(names)
    return Snapshot(
        counters=counters,
        latency=latency,
        queue_wait=queue_wait,
        queue_depth=queue_depth,
        in_flight=in_flight,
        rate_limit=rate_limit,
        rate_limit_remaining=remaining,
        circuits={n: views[n].state if n in views else CircuitState.CLOSED for n in names},
        healthy={
            name: probe.status is not HealthStatus.UNHEALTHY
            for name, probe in health.items()
            if probe.status is not HealthStatus.UNKNOWN
        },
    )


class DispatcherCollector(Collector):
    """A prometheus_client collector reading the dispatcher's figures on every `collect()`."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._errors = 0
        self._lock = threading.Lock()

    @classmethod
    def from_client(cls, client: Client) -> DispatcherCollector:
        """A collector over `client`'s Redis and configuration."""
        return cls(client.store, client.settings)

    def collect(self) -> Iterable[Metric]:
        """The metrics as Redis holds them now; only `redis_up` 0 when Redis cannot be read."""
        try:
            snapshot = read_snapshot(self.store, self.settings)
        except redis.RedisError as exc:
            logger.warning("metrics scrape could not read Redis: %s", redact(str(exc)))
            with self._lock:
                self._errors += 1
            snapshot = None
        up = 0 if snapshot is None else 1
        yield _gauge("redis_up", "1 when this scrape could read Redis, 0 when not.", [], [([], up)])
        errors = CounterMetricFamily(
            f"{PREFIX}_scrape_errors", "Scrapes of this exporter that could not read Redis."
        )
        errors.add_metric([], self._errors)
        yield errors
        if snapshot is not None:
            yield from _families(snapshot)


def _families(s: Snapshot) -> Iterator[Metric]:
    yield _gauge(
        "queue_depth",
        "Messages waiting in the vendor's queue (lane interactive: llm.<vendor>, batch).",
        ["vendor", "lane"],
        [([vendor, lane], n) for (vendor, lane), n in s.queue_depth.items()],
    )
    yield _gauge(
        "in_flight",
        "Jobs running on the vendor now.",
        ["vendor"],
        [([vendor], n) for vendor, n in s.in_flight.items()],
    )
    vendors = sorted({*s.counted_vendors(), *s.latency})

    jobs = CounterMetricFamily(
        f"{PREFIX}_jobs",
        "Jobs that ended, by their last vendor and outcome.",
        labels=["vendor", "outcome"],
    )
    for outcome, field in ((JobStatus.SUCCEEDED, "successes"), (JobStatus.FAILED, "failures")):
        per_vendor = [s.counter(f"v:{vendor}:{field}") for vendor in vendors]
        for vendor, n in zip(vendors, per_vendor, strict=True):
            jobs.add_metric([vendor, outcome.value], n)
        # Jobs that ended before any vendor took them (no route, over budget).
        jobs.add_metric(["", outcome.value], max(0.0, s.counter(f"t:{field}") - sum(per_vendor)))
    jobs.add_metric(["", JobStatus.CANCELLED.value], s.counter("t:cancelled"))
    yield jobs
    yield _counter(s, "retries", "Attempts retried on the same vendor.", vendors, "retries")
    yield _counter(
        s, "fallbacks", "Jobs moved from this vendor to the next candidate.", vendors, "fallbacks"
    )

    latency = HistogramMetricFamily(
        f"{PREFIX}_vendor_latency_seconds",
        "Time the vendor took to answer (the call, or a whole stream).",
        labels=["vendor"],
    )
    for vendor in vendors:
        total_s = s.counter(f"v:{vendor}:latency_ms_sum") / 1000
        latency.add_metric([vendor], _buckets(s.latency.get(vendor, {})), total_s)
    yield latency
    queue_wait = HistogramMetricFamily(
        f"{PREFIX}_queue_wait_seconds", "Time from submit to a worker starting the job."
    )
    queue_wait.add_metric([], _buckets(s.queue_wait), s.counter("t:queue_wait_ms_sum") / 1000)
    yield queue_wait

    tokens = CounterMetricFamily(
        f"{PREFIX}_tokens", "Tokens the vendors reported.", labels=["vendor", "kind"]
    )
    for vendor in vendors:
        for kind in TOKEN_KINDS:
            tokens.add_metric([vendor, kind], s.counter(f"v:{vendor}:{kind}_tokens"))
    yield tokens
    yield _counter(s, "cost_usd", "Estimated cost in US dollars.", vendors, "cost_usd")
    yield _counter(
        s,
        "unpriced_calls",
        "Successful calls whose model has no price: left out of the cost.",
        vendors,
        "unpriced_calls",
    )

    yield _gauge(
        "rate_limit",
        "The vendor's configured limit per minute (rpm: requests, tpm: tokens).",
        ["vendor", "kind"],
        [([vendor, kind], n) for (vendor, kind), n in s.rate_limit.items()],
    )
    yield _gauge(
        "rate_limit_remaining",
        "What the vendor-wide bucket holds now (at most its burst); 0 when jobs owe it.",
        ["vendor", "kind"],
        [([v, kind], max(0.0, n)) for (v, kind), n in s.rate_limit_remaining.items()],
    )
    yield _gauge(
        "circuit_state",
        "The vendor's shared circuit breaker: 0 closed, 1 half-open, 2 open.",
        ["vendor"],
        [([vendor], CIRCUIT_VALUES[state]) for vendor, state in s.circuits.items()],
    )
    yield _gauge(
        "vendor_healthy",
        "1 when the vendor's last health check passed (healthy or degraded), 0 when not.",
        ["vendor"],
        [([vendor], healthy) for vendor, healthy in s.healthy.items()],
    )


def _gauge(
    name: str, documentation: str, labels: list[str], values: Iterable[tuple[list[str], float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, float(value))
    return family


def _counter(
    s: Snapshot, name: str, documentation: str, vendors: list[str], field: str
) -> CounterMetricFamily:
    family = CounterMetricFamily(f"{PREFIX}_{name}", documentation, labels=["vendor"])
    for vendor in vendors:
        family.add_metric([vendor], s.counter(f"v:{vendor}:{field}"))
    return family


def _buckets(histogram: Mapping[str, str]) -> list[tuple[str, float]]:
    """Our per-bucket counts (by bound index, in ms) as Prometheus's cumulative buckets (s)."""
    found, seen = [], 0
    for index, bound_ms in enumerate(BUCKET_BOUNDS_MS):
        seen += int(histogram.get(str(index), 0))
        bound_s = bound_ms / 1000
        found.append(("+Inf" if bound_s == float("inf") else repr(bound_s), float(seen)))
    return found


def _vendors_in(counters: Mapping[str, str]) -> list[str]:
    """The vendors the statistics hash names (fields `v:<vendor>:<name>`), sorted."""
    return sorted({f.split(":")[1] for f in counters if f.startswith("v:")})
