"""Scheduled health checks, real worker: an unhealthy vendor is routed around until it recovers."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher import HealthStatus, Message, Request
from producer import Client
from tests.integration.stack import Stack, running_stack, wait_for

pytestmark = pytest.mark.integration

KEY = "sk-health-test-0123456789abcdef"
INTERVAL_S = 0.5


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        yield running


def set_models_status(stack: Stack, status: int) -> None:
    """What primary's health checks get from now on (backup's stay 200)."""
    url = f"{stack.standin.url}/__models_status/{status}?x-vendor=primary"
    post = urllib.request.Request(url, method="POST")  # noqa: S310 - loopback stand-in
    with urllib.request.urlopen(post, timeout=10) as answer:  # noqa: S310 - loopback stand-in
        assert json.load(answer) == {"ok": True}


def test_an_unhealthy_vendor_is_left_out_of_routing_and_readmitted_when_healthy(
    stack: Stack,
) -> None:
    stack.configure(
        {
            "vendors": {
                "primary": {
                    "type": "openai",
                    "base_url": "{url}/v1",
                    "models": ["gpt-*"],
                    "api_key": "${OPENAI_API_KEY}",
                    "headers": {"x-vendor": "primary"},
                },
                "backup": {
                    "type": "openai_compatible",
                    "base_url": "{url}/v1",
                    "api_key": "${OPENAI_API_KEY}",
                },
            },
            "model_groups": {
                "smart": [
                    {"vendor": "primary", "model": "gpt-4o"},
                    {"vendor": "backup", "model": "llama-3-70b"},
                ]
            },
        },
        OPENAI_API_KEY=KEY,
        LLMDISPATCH_HEALTH_CHECK_INTERVAL_S=str(INTERVAL_S),
    )
    stack.start_worker(["llm.primary", "llm.backup"], concurrency=4)
    with stack.environment():
        client = Client.from_env()
    smart = Request(model="smart", messages=[Message(role="user", content="hi")])

    def health_of(vendor: str) -> HealthStatus | None:
        found = client.store.health.latest([vendor])
        return found[vendor].status if vendor in found else None

    def served_by() -> str:
        # A fresh client routes by what it reads now (a client re-reads once a second).
        with stack.environment():
            fresh = Client.from_env()
        try:
            return fresh.send(smart, timeout_s=20).vendor
        finally:
            fresh.close()

    # The worker probes its vendors from the moment it is ready, before any job
    # (each in its own probe: wait for both, not one then the other).
    wait_for(
        lambda: health_of("primary") is health_of("backup") is HealthStatus.HEALTHY,
        60,
        "both vendors found healthy",
    )
    assert served_by() == "primary"

    set_models_status(stack, 401)
    wait_for(lambda: health_of("primary") is HealthStatus.UNHEALTHY, 60, "primary unhealthy")
    before = [r for r in stack.received() if r["headers"].get("x-vendor") == "primary"]
    assert [served_by() for _ in range(3)] == ["backup"] * 3
    after = [r for r in stack.received() if r["headers"].get("x-vendor") == "primary"]
    assert [r["path"] for r in after[len(before) :]] == []  # not even tried

    set_models_status(stack, 200)
    wait_for(lambda: health_of("primary") is HealthStatus.HEALTHY, 60, "primary healthy again")
    assert served_by() == "primary"
    client.close()
