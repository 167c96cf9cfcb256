"""Scheduled health checks: one probe per vendor per interval across workers, kept in Redis."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import httpx
import pytest

from dispatcher.config.schema import VendorConfig
from dispatcher.models import HealthStatus, Request, Response
from dispatcher.runner.health import RESULT_LIFETIME_INTERVALS, HealthMonitor, probe
from dispatcher.state.store import JobStore
from dispatcher.vendors import build_vendor
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
        problem="error",
        detail="health check failed: KeyError",
        checked_at=found["buggy"].checked_at,
    )


def test_a_monitor_needs_a_positive_interval(store: JobStore) -> None:
    with pytest.raises(ValueError, match="interval_s must be greater than 0, not 0"):
        HealthMonitor(store, {}, interval_s=0)


# --- probes over HTTP: what the detail says, and when the vendor stays routable ---------


def http_vendor(
    name: str, status: int, body: Any = None, **config: Any
) -> tuple[Vendor, list[httpx.Request]]:
    """A real vendor client whose server answers every request with `status` and `body`."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body if body is not None else {"data": []})

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    fields = {"type": "openai", "api_key": "sk-probe-test-0123456789", **config}
    return build_vendor(name, VendorConfig(**fields), client), seen


def test_a_401_names_the_status_and_the_keys_variable() -> None:
    unauthorized = {
        "error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}
    }
    vendor, _ = http_vendor("openai", 401, unauthorized)

    health = asyncio.run(probe("openai", vendor))

    assert health.status is HealthStatus.UNHEALTHY
    assert health.problem == "auth"
    assert health.detail.startswith("HTTP 401 from its health check, check OPENAI_API_KEY: ")
    assert "sk-probe-test" not in health.detail


def test_a_vendor_from_the_file_is_told_to_check_its_config_entry() -> None:
    vendor, _ = http_vendor(
        "local",
        403,
        {"error": {"message": "forbidden"}},
        type="openai_compatible",
        base_url="http://llm.internal/v1",
    )

    health = asyncio.run(probe("local", vendor))

    assert "check vendors.local.api_key" in health.detail


@pytest.mark.parametrize("status", [404, 405])
def test_a_server_with_no_model_list_stays_unknown_and_routable(status: int) -> None:
    vendor, seen = http_vendor(
        "local",
        status,
        {"detail": "Not Found"},
        type="openai_compatible",
        base_url="http://llm.internal/v1",
    )

    health = asyncio.run(probe("local", vendor))

    assert health.status is HealthStatus.UNKNOWN
    assert health.problem == "no_model_list"
    assert health.detail.startswith(f"no model list at GET /v1/models (HTTP {status})")
    assert "health_check: call" in health.detail
    assert seen[0].url.path == "/v1/models"


def test_health_check_call_asks_for_one_token_of_the_probe_model() -> None:
    reply = {
        "id": "x", "object": "chat.completion", "created": 1, "model": "llama-3",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "p"},
             "finish_reason": "length"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }  # fmt: skip
    vendor, seen = http_vendor(
        "local", 200, reply, type="openai_compatible", base_url="http://llm.internal/v1",
        models=["llama-*", "llama-3"], health_check="call",
    )  # fmt: skip

    health = asyncio.run(probe("local", vendor))

    assert health.status is HealthStatus.HEALTHY
    assert seen[0].url.path == "/v1/chat/completions"
    body = json.loads(seen[0].content)
    assert (body["model"], body["max_tokens"]) == ("llama-3", 1)


def test_health_check_off_probes_nothing_and_says_so() -> None:
    vendor, seen = http_vendor("local", 500, type="openai", health_check="off")

    health = asyncio.run(probe("local", vendor))

    assert (health.status, health.problem, seen) == (HealthStatus.UNKNOWN, "off", [])


def test_a_call_probe_needs_a_model_that_is_not_a_pattern() -> None:
    with pytest.raises(ValueError, match="health_check 'call' needs health_check_model"):
        VendorConfig(
            type="openai_compatible", base_url="http://x/v1", models=["*"], health_check="call"
        )
    config = VendorConfig(type="openai", health_check="call", health_check_model="gpt-4o-mini")
    assert config.probe_model == "gpt-4o-mini"


def test_a_worker_warns_once_of_a_key_problem_and_again_when_the_state_changes(
    store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    bad = Health(status=HealthStatus.UNHEALTHY, problem="auth", status_code=401, detail="bad key")
    vendor = ProbedVendor("openai", bad)
    monitor = HealthMonitor(store, {"openai": vendor}, interval_s=60)

    with caplog.at_level(logging.INFO, logger="dispatcher.runner.health"):
        for _ in range(3):
            asyncio.run(monitor.check_due())
            store.redis.delete(store.keys.health_turn("openai"))  # the next interval
        vendor.answer = HEALTHY
        asyncio.run(monitor.check_due())

    said = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name == "dispatcher.runner.health"
    ]
    assert said == [
        (
            "WARNING",
            "vendor openai: unhealthy: "
            "HTTP 401 from its health check, check OPENAI_API_KEY: bad key",
        ),
        ("INFO", "vendor openai is healthy now"),
    ]
