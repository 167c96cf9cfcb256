"""The Prometheus collector, on fakeredis: every metric read from what the store wrote."""

from __future__ import annotations

from collections.abc import Callable

import fakeredis
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from dispatcher import Request, Response, Route, Settings, Usage
from dispatcher.broker.celery_wire import priority_lists
from dispatcher.config.schema import VendorConfig
from dispatcher.errors import VendorUnavailable
from dispatcher.models import HealthStatus, JobEvent, JobEventKind, JobStatus
from dispatcher.routing.router import batch_queue_for, queue_for
from dispatcher.state.ratelimit import RateLimiter
from dispatcher.state.store import Bucket, JobStore
from dispatcher.vendors.base import Health
from producer.cli.tools.metrics import DispatcherCollector, bucket_level

PREFIX = "llmd"
START_S = 1_700_000_000.0
TPM_BURST = 9_000


class Clock:
    """A clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now_s = START_S

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def settings() -> Settings:
    return Settings(
        vendors={
            "openai": VendorConfig(
                type="openai",
                api_key=SecretStr("sk-test-0123456789"),
                rpm=600,
                tpm=90_000,
                rpm_burst=60,
                tpm_burst=TPM_BURST,
            ),
            "backup": VendorConfig(type="openai_compatible", base_url="http://127.0.0.1:9/v1"),
        }
    )


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(server: fakeredis.FakeServer, clock: Clock) -> JobStore:
    return JobStore(fakeredis.FakeRedis(server=server), PREFIX, now=clock)


@pytest.fixture
def registry(store: JobStore, settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(DispatcherCollector(store, settings))
    return registry


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(registry: CollectorRegistry) -> Callable[..., float | None]:
    """One scrape; look its samples up by name and labels (None: no such sample)."""
    samples: Samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, frozenset(labels.items())))

    return value


def queued(store: JobStore, make_request: Callable[..., Request], vendor: str) -> str:
    job_id = store.new_job_id()
    store.create(job_id, make_request(), Route(vendor=vendor, model="m", queue=queue_for(vendor)))
    return job_id


def reply(latency_ms: float, prompt: int, completion: int, cost_usd: float) -> Response:
    return Response(
        content="hi",
        model="gpt-4o-mini",
        vendor="openai",
        latency_ms=latency_ms,
        usage=Usage(prompt_tokens=prompt, completion_tokens=completion),
        cost_usd=cost_usd,
    )


@pytest.fixture
def busy(store: JobStore, clock: Clock, make_request: Callable[..., Request]) -> None:
    """Two successes, a failure, a cancel, a retry, one running, messages waiting, a circuit
    open, a bucket partly spent and a health check: everything the metrics show."""
    fast, slow, failed, running, cancelled, retried = (
        queued(store, make_request, vendor)
        for vendor in ("openai", "openai", "backup", "openai", "openai", "openai")
    )
    clock.now_s += 0.5  # every claim below waited half a second
    for job_id, vendor in ((fast, "openai"), (slow, "openai"), (failed, "backup")):
        assert store.claim(job_id, 0, vendor).verdict == "ok"
    assert store.claim(running, 0, "openai").verdict == "ok"
    assert store.finish(
        fast, JobStatus.SUCCEEDED, vendor="openai", response=reply(400, 30, 12, 0.01)
    )
    assert store.finish(
        slow, JobStatus.SUCCEEDED, vendor="openai", response=reply(1200, 10, 5, 0.02)
    )
    assert store.finish(
        failed, JobStatus.FAILED, vendor="backup", error=VendorUnavailable("down", vendor="backup")
    )
    assert store.cancel(cancelled)
    store.reschedule(
        retried,
        from_attempt=0,
        to_attempt=1,
        event=JobEvent(kind=JobEventKind.RETRY, attempt=1),
        counters=[("t:retries", 1), ("v:openai:retries", 1)],
    )
    # Waiting: two in openai's interactive lane (two priority lists), one in its batch lane.
    interactive = priority_lists(queue_for("openai"))
    store.redis.lpush(interactive[0], "message")
    store.redis.lpush(interactive[2], "message")
    store.redis.lpush(priority_lists(batch_queue_for("openai"))[0], "message")
    assert store.circuits.trip("backup", failure_threshold=1, keep_s=60) == "open"
    tpm = Bucket(store.keys.limit("openai", "tpm"), "tpm", 90_000 / 60, TPM_BURST, 1_000)
    assert RateLimiter(store.redis, now=clock).acquire([tpm]).taken
    store.health.save("openai", Health(status=HealthStatus.DEGRADED), ttl_s=60)
    clock.now_s += 0.4  # 600 of the 1,000 tokens have come back


@pytest.mark.usefixtures("busy")
def test_queue_depth_in_flight_and_jobs_by_outcome_match_the_store(
    registry: CollectorRegistry,
) -> None:
    value = scrape(registry)
    assert value("llmdispatch_queue_depth", vendor="openai", lane="interactive") == 2
    assert value("llmdispatch_queue_depth", vendor="openai", lane="batch") == 1
    assert value("llmdispatch_queue_depth", vendor="backup", lane="interactive") == 0
    assert value("llmdispatch_in_flight", vendor="openai") == 1
    assert value("llmdispatch_in_flight", vendor="backup") == 0
    assert value("llmdispatch_jobs_total", vendor="openai", outcome="succeeded") == 2
    assert value("llmdispatch_jobs_total", vendor="openai", outcome="failed") == 0
    assert value("llmdispatch_jobs_total", vendor="backup", outcome="failed") == 1
    assert value("llmdispatch_jobs_total", vendor="", outcome="cancelled") == 1
    assert value("llmdispatch_jobs_total", vendor="", outcome="failed") == 0
    assert value("llmdispatch_retries_total", vendor="openai") == 1
    assert value("llmdispatch_fallbacks_total", vendor="openai") == 0
    assert value("llmdispatch_redis_up") == 1
    assert value("llmdispatch_scrape_errors_total") == 0


@pytest.mark.usefixtures("busy")
def test_latency_and_queue_wait_histograms_are_cumulative_in_seconds(
    registry: CollectorRegistry,
) -> None:
    value = scrape(registry)

    def bucket(name: str, le: str, **labels: str) -> float | None:
        return value(f"{name}_bucket", **labels, le=le)

    latency = "llmdispatch_vendor_latency_seconds"
    # 400 ms falls in the 0.5 s bucket, 1,200 ms in the 2.5 s one.
    assert bucket(latency, "0.25", vendor="openai") == 0
    assert bucket(latency, "0.5", vendor="openai") == 1
    assert bucket(latency, "1.0", vendor="openai") == 1
    assert bucket(latency, "2.5", vendor="openai") == 2
    assert bucket(latency, "+Inf", vendor="openai") == 2
    assert value(f"{latency}_count", vendor="openai") == 2
    assert value(f"{latency}_sum", vendor="openai") == pytest.approx(1.6)
    assert value(f"{latency}_count", vendor="backup") == 0

    wait = "llmdispatch_queue_wait_seconds"
    assert bucket(wait, "0.25") == 0
    assert bucket(wait, "0.5") == 4  # every claim waited 500 ms
    assert bucket(wait, "+Inf") == 4
    assert value(f"{wait}_sum") == pytest.approx(2.0)


@pytest.mark.usefixtures("busy")
def test_tokens_cost_limits_circuits_and_health_are_shown(registry: CollectorRegistry) -> None:
    value = scrape(registry)
    assert value("llmdispatch_tokens_total", vendor="openai", kind="prompt") == 40
    assert value("llmdispatch_tokens_total", vendor="openai", kind="completion") == 17
    assert value("llmdispatch_tokens_total", vendor="backup", kind="prompt") == 0
    assert value("llmdispatch_cost_usd_total", vendor="openai") == pytest.approx(0.03)
    assert value("llmdispatch_rate_limit", vendor="openai", kind="rpm") == 600
    assert value("llmdispatch_rate_limit", vendor="openai", kind="tpm") == 90_000
    assert value("llmdispatch_rate_limit", vendor="backup", kind="rpm") is None  # unlimited
    assert value("llmdispatch_rate_limit_remaining", vendor="openai", kind="rpm") == 60  # untouched
    assert value("llmdispatch_rate_limit_remaining", vendor="openai", kind="tpm") == pytest.approx(
        TPM_BURST - 1_000 + 600
    )
    assert value("llmdispatch_circuit_state", vendor="backup") == 2
    assert value("llmdispatch_circuit_state", vendor="openai") == 0
    assert value("llmdispatch_vendor_healthy", vendor="openai") == 1  # degraded still serves
    assert value("llmdispatch_vendor_healthy", vendor="backup") is None  # never checked


def test_an_idle_dispatcher_shows_empty_queues_full_buckets_and_closed_circuits(
    registry: CollectorRegistry,
) -> None:
    text = generate_latest(registry).decode()
    assert 'llmdispatch_queue_depth{lane="interactive",vendor="openai"} 0.0' in text
    assert 'llmdispatch_rate_limit_remaining{kind="tpm",vendor="openai"} 9000.0' in text
    assert 'llmdispatch_circuit_state{vendor="backup"} 0.0' in text
    assert "llmdispatch_queue_wait_seconds_count 0.0" in text
    assert 'llmdispatch_jobs_total{outcome="succeeded",vendor="openai"} 0.0' in text
    assert "# TYPE llmdispatch_vendor_latency_seconds histogram" in text


def test_a_scrape_without_redis_reports_redis_down_and_counts_the_error(
    registry: CollectorRegistry, server: fakeredis.FakeServer
) -> None:
    server.connected = False
    for errors in (1, 2):
        value = scrape(registry)
        assert value("llmdispatch_redis_up") == 0
        assert value("llmdispatch_scrape_errors_total") == errors
        assert value("llmdispatch_queue_depth", vendor="openai", lane="batch") is None
    server.connected = True
    value = scrape(registry)
    assert value("llmdispatch_redis_up") == 1
    assert value("llmdispatch_scrape_errors_total") == 2  # the exporter's own count stays


def test_a_bucket_refills_as_the_lua_level_does_and_starts_full() -> None:
    assert bucket_level(None, None, rate_per_s=10.0, size=100.0, now=START_S) == 100.0
    assert bucket_level(b"20", str(START_S - 3), rate_per_s=10.0, size=100.0, now=START_S) == 50.0
    assert bucket_level("20", str(START_S - 30), rate_per_s=10.0, size=100.0, now=START_S) == 100.0
    # Charged ahead: stamped in the future, it does not refill before then.
    assert bucket_level("-40", str(START_S + 5), rate_per_s=10.0, size=100.0, now=START_S) == -40.0


def test_unpriced_calls_are_counted_apart_from_the_cost(
    store: JobStore, registry: CollectorRegistry, make_request: Callable[..., Request]
) -> None:
    job_id = queued(store, make_request, "backup")
    assert store.claim(job_id, 0, "backup").verdict == "ok"
    assert store.finish(
        job_id, JobStatus.SUCCEEDED, vendor="backup", response=reply(50, 7, 3, 0.0), unpriced=True
    )

    value = scrape(registry)
    assert value("llmdispatch_unpriced_calls_total", vendor="backup") == 1
    assert value("llmdispatch_unpriced_calls_total", vendor="openai") == 0
    assert value("llmdispatch_cost_usd_total", vendor="backup") == 0
