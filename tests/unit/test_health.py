"""Scheduled health checks: one probe per vendor per interval across workers, kept in Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import fakeredis
import pytest

from dispatcher.config_schema import VendorConfig
from dispatcher.health import RESULT_LIFETIME_INTERVALS, HealthMonitor
from dispatcher.models import HealthStatus, Request, Response
from dispatcher.store import JobStore
from dispatcher.vendors.base import Health, StreamDelta, Vendor

PREFIX = "llmd-health-test"


class ProbedVendor(Vendor):
    """A vendor whose health check answers what the test says, counting the probes."""

    def __init__(self, name: str, answer: Health | BaseException | None, timeout_s: float = 5.0):
        super().__init__(name, VendorConfig(type="openai", timeout_s=timeout_s))
        self.answer = answer
        self.probes = 0

    async def health_check(self) -> Health:
        self.probes += 1
        if self.answer is None:
            await asyncio.sleep(3600)  # never answers
        if isinstance(self.answer, BaseException):
            raise self.answer
        assert self.answer is not None
        return self.answer

    async def complete(self, request: Request, model: str | None = None) -> Response:
        raise NotImplementedError

    def stream(self, request: Request, model: str | None = None) -> AsyncIterator[StreamDelta]:
        raise NotImplementedError


HEALTHY = Health(status=HealthStatus.HEALTHY, latency_ms=12.0)


@pytest.fixture
def store() -> JobStore:
    return JobStore(fakeredis.FakeRedis(), PREFIX)


def test_each_vendor_is_probed_by_one_worker_per_interval(store: JobStore) -> None:
    slow = Health(status=HealthStatus.DEGRADED, latency_ms=9_000.0, detail="slow")
    vendors = {"a": ProbedVendor("a", HEALTHY), "b": ProbedVendor("b", slow)}
    first = HealthMonitor(store, vendors, interval_s=60)
    second = HealthMonitor(store, dict(vendors), interval_s=60)  # another worker

    found = asyncio.run(first.check_due())
    again = asyncio.run(second.check_due())

    assert found == {"a": HEALTHY, "b": slow}
    assert again == {}
    assert [v.probes for v in vendors.values()] == [1, 1]
    assert store.health.latest(["a", "b", "c"]) == {"a": HEALTHY, "b": slow}


def test_a_result_is_kept_for_three_intervals(store: JobStore) -> None:
    monitor = HealthMonitor(store, {"a": ProbedVendor("a", HEALTHY)}, interval_s=10)

    asyncio.run(monitor.check_due())

    ttl_ms = store.redis.pttl(store.keys.health("a"))
    assert 0 < ttl_ms <= 10_000 * RESULT_LIFETIME_INTERVALS
    assert ttl_ms > 10_000 * (RESULT_LIFETIME_INTERVALS - 1)


def test_a_probe_that_hangs_or_breaks_reads_as_unhealthy(store: JobStore) -> None:
    vendors = {
        "silent": ProbedVendor("silent", None, timeout_s=0.05),
        "buggy": ProbedVendor("buggy", KeyError("oops")),
    }

    found = asyncio.run(HealthMonitor(store, vendors, interval_s=60).check_due())

    assert found["silent"].status is HealthStatus.UNHEALTHY
    assert found["silent"].detail == "no answer to the health check within 0.05 s"
    assert found["buggy"] == Health(
        status=HealthStatus.UNHEALTHY,
        detail="health check failed: KeyError",
        checked_at=found["buggy"].checked_at,
    )


def test_a_monitor_needs_a_positive_interval(store: JobStore) -> None:
    with pytest.raises(ValueError, match="interval_s must be greater than 0, not 0"):
        HealthMonitor(store, {}, interval_s=0)
