"""`vendor_status`: each vendor's health, circuit, queue, in flight, totals and last minute."""

from __future__ import annotations

import json
from collections.abc import Callable

import fakeredis
import pytest
from typer.testing import CliRunner

from dispatcher import Request, Response, Route, Settings, Usage
from dispatcher.broker.celery_wire import priority_lists
from dispatcher.config.schema import VendorConfig
from dispatcher.models import CircuitState, HealthStatus, JobStatus
from dispatcher.state.status import vendor_status
from dispatcher.state.store import JobStore
from dispatcher.vendors.base import Health
from producer.cli import root as cli
from producer.client import Client

PREFIX = "llmd"
NOW_S = 1_700_000_010.0  # half a minute into a minute (epoch 1_699_999_980 + 30)


class Clock:
    def __init__(self) -> None:
        self.now_s = NOW_S

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def settings() -> Settings:
    return Settings(
        vendors={
            "openai": VendorConfig(
                type="openai", api_key="sk-test-0123456789", rpm=600, tpm=90_000
            ),
            "backup": VendorConfig(type="openai_compatible", base_url="http://127.0.0.1:9/v1"),
        }
    )


@pytest.fixture
def store() -> JobStore:
    return JobStore(fakeredis.FakeRedis(), PREFIX, now=Clock())


def job(store: JobStore, make_request: Callable[..., Request], vendor: str = "openai") -> str:
    job_id = store.new_job_id()
    route = Route(vendor=vendor, model="gpt-4o-mini", queue=f"llm.{vendor}")
    store.create(job_id, make_request(), route)
    return job_id


def test_status_shows_health_circuit_queue_running_totals_and_the_last_minute(
    settings: Settings, store: JobStore, make_request: Callable[..., Request]
) -> None:
    store.health.save("openai", Health(status=HealthStatus.DEGRADED, detail="slow"), ttl_s=60)
    assert store.circuits.trip("backup", failure_threshold=1, keep_s=60) == "open"
    # Two messages wait in openai's queue (kombu keeps one list per priority step).
    queues = priority_lists("llm.openai")
    store.redis.lpush(queues[0], "message")
    store.redis.lpush(queues[2], "message")
    running = job(store, make_request)
    assert store.claim(running, 0, "openai").verdict == "ok"
    done = job(store, make_request)
    assert store.claim(done, 0, "openai").verdict == "ok"
    reply = Response(
        content="hi",
        usage=Usage(prompt_tokens=30, completion_tokens=12),
        model="gpt-4o-mini",
        vendor="openai",
        latency_ms=400.0,
    )
    assert store.finish(done, JobStatus.SUCCEEDED, vendor="openai", response=reply)

    backup, openai = vendor_status(store, settings)

    assert (openai.name, openai.type) == ("openai", "openai")
    assert (openai.health, openai.health_detail) == (HealthStatus.DEGRADED, "slow")
    assert openai.circuit is CircuitState.CLOSED
    assert (openai.queue_depth, openai.in_flight) == (2, 1)
    assert (openai.requests, openai.errors, openai.avg_latency_ms) == (1, 0, 400.0)
    assert (openai.requests_per_minute, openai.tokens_per_minute) == (1.0, 42.0)
    assert (openai.rpm_limit, openai.tpm_limit) == (600, 90_000)
    assert backup.circuit is CircuitState.OPEN
    assert backup.health is HealthStatus.UNKNOWN
    assert (backup.queue_depth, backup.in_flight, backup.requests) == (0, 0, 0)


def test_the_last_minute_slides_and_calls_past_twice_their_timeout_are_not_in_flight(
    settings: Settings, store: JobStore, make_request: Callable[..., Request]
) -> None:
    clock = store.now
    assert isinstance(clock, Clock)
    for _ in range(2):
        job_id = job(store, make_request)
        assert store.claim(job_id, 0, "openai").verdict == "ok"
        assert store.finish(
            job_id,
            JobStatus.SUCCEEDED,
            vendor="openai",
            response=Response(content="hi", model="m", vendor="openai"),
        )
    stuck = job(store, make_request)
    assert store.claim(stuck, 0, "openai").verdict == "ok"

    clock.now_s += 45.0  # into the next minute by 15 s: a quarter of the last one is gone
    status = next(s for s in vendor_status(store, settings) if s.name == "openai")
    assert status.requests_per_minute == pytest.approx(1.5)
    assert status.in_flight == 1

    clock.now_s += 2 * 60.0 + 1.0  # past twice openai's 60 s timeout
    status = next(s for s in vendor_status(store, settings) if s.name == "openai")
    assert (status.requests_per_minute, status.in_flight) == (0.0, 0)


def test_llmdispatch_status_prints_a_table_and_json(
    settings: Settings, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.health.save("openai", Health(status=HealthStatus.HEALTHY), ttl_s=60)
    client = Client(settings, redis_client=store.redis, send=lambda *a: None)
    monkeypatch.setattr(cli, "make_client", lambda: client)
    runner = CliRunner()

    text = runner.invoke(cli.app, ["status"])
    as_json = runner.invoke(cli.app, ["status", "--json"])

    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0].split()[:3] == ["vendor", "health", "circuit"]
    assert lines[1].split() == ["backup", "unknown", "closed", "0", "0", "0", "0", "0", "0", "0"]
    assert lines[2].split() == [
        "openai",
        "healthy",
        "closed",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0/600",
        "0/90000",
    ]
    assert as_json.exit_code == 0, as_json.output
    assert [v["name"] for v in json.loads(as_json.output)] == ["backup", "openai"]
