"""The `llmdispatch metrics` exporter, scraped over HTTP while a real worker runs jobs."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher import Message, Request, Role
from producer import Client
from tests.integration.stack import Stack, running_stack, wait_for

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "llmdispatch"
KEY = "sk-metrics-test-0123456789abcdef"
# Enough jobs that, at 300 ms each on one worker thread, many still wait when we scrape.
JOBS = 30
STARTED_TIMEOUT_S = 30.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        yield running


def scrape(url: str) -> Samples:
    """Every sample the exporter serves, by name and labels."""
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - our loopback URL
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_the_exporter_shows_waiting_messages_latency_and_tokens_during_a_run(
    stack: Stack, tmp_path: Path
) -> None:
    stack.configure(
        {
            "vendors": {
                "primary": {
                    "type": "openai",
                    "base_url": "{url}/v1",
                    "api_key": "${OPENAI_API_KEY}",
                    "timeout_s": 10,
                    "rpm": 6000,
                    "headers": {"x-fake-fault": "slow:300"},
                }
            },
            "default_vendor": "primary",
        },
        OPENAI_API_KEY=KEY,
        # One job at a time, so jobs are still waiting while the first ones end.
        LLMDISPATCH_WORKER_MAX_IN_FLIGHT="1",
    )
    log = tmp_path / "metrics.log"
    with log.open("wb") as out:
        exporter = subprocess.Popen(
            [str(SCRIPT), "metrics", "--port", "0"],
            env=stack.env,
            cwd=tmp_path,  # not the checkout, whose .env may hold real keys
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def announced() -> str | None:
            if exporter.poll() is not None:
                raise AssertionError(f"the exporter exited: {log.read_text()}")
            found = re.search(r"serving metrics on (http://\S+/metrics)", log.read_text())
            return found.group(1) if found else None

        url: str = wait_for(announced, STARTED_TIMEOUT_S, "the exporter to listen")
        with stack.environment():
            client = Client.from_env()
        with client:
            request = Request(model="gpt-4o-mini", messages=[Message(role=Role.USER, content="hi")])
            for _ in range(JOBS):
                client.submit(request)
            idle = scrape(url)
            assert (
                value(idle, "llmdispatch_queue_depth", vendor="primary", lane="interactive") == JOBS
            )

            stack.start_worker(["llm.primary"], concurrency=1)
            wait_for(lambda: client.stats().successful_requests >= 2, STARTED_TIMEOUT_S, "two jobs")
            samples = scrape(url)
    finally:
        exporter.terminate()
        exporter.wait(timeout=30)

    waiting = value(samples, "llmdispatch_queue_depth", vendor="primary", lane="interactive")
    assert 0 < waiting < JOBS
    latency = "llmdispatch_vendor_latency_seconds"
    assert value(samples, f"{latency}_count", vendor="primary") >= 2
    assert value(samples, f"{latency}_sum", vendor="primary") >= 2 * 0.3  # slow:300 each
    assert value(samples, f"{latency}_bucket", vendor="primary", le="0.25") == 0
    assert value(samples, "llmdispatch_queue_wait_seconds_count") >= 2
    assert value(samples, "llmdispatch_jobs_total", vendor="primary", outcome="succeeded") >= 2
    assert value(samples, "llmdispatch_tokens_total", vendor="primary", kind="prompt") > 0
    assert value(samples, "llmdispatch_tokens_total", vendor="primary", kind="completion") > 0
    assert value(samples, "llmdispatch_rate_limit", vendor="primary", kind="rpm") == 6000
    assert value(samples, "llmdispatch_circuit_state", vendor="primary") == 0
    assert value(samples, "llmdispatch_redis_up") == 1
    assert exporter.returncode == 0, log.read_text()
