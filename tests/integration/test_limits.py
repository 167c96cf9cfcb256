"""Shared rate limits hold across worker processes: real workers, private Redis, HTTP vendor.

Two `celery worker` processes take jobs for one stand-in vendor with a limit;
the stand-in records when each request arrived. Over a 15 s window, what
reached the vendor must stay within the limit plus its burst, and use at
least 90 % of the limit (the backlog is always there to use it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import JobStatus, Message, Request
from producer import Client
from tests.integration.stack import Stack, running_stack, wait_for

pytestmark = pytest.mark.integration

KEY = "sk-limits-test-0123456789abcdef"
WINDOW_S = 15.0
# Buckets count a call when its job is claimed; the request reaches the stand-in a few
# ms later, the first ones up to a few hundred ms later (they open connections), and on
# a machine busy with other work up to a second or two. So a window timed by arrivals
# may hold up to this much more time's worth of the rate: still far below what two
# workers each keeping the limit on their own would let through (twice the limit).
ARRIVAL_SPREAD_S = 2.0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        yield running


def limited_client(stack: Stack, **limits: Any) -> Client:
    """A client, and two workers, for one OpenAI-format stand-in vendor with `limits`."""
    stack.configure(
        {
            "vendors": {
                "primary": {
                    "type": "openai",
                    "base_url": "{url}/v1",
                    "models": ["gpt-*"],
                    "api_key": "${OPENAI_API_KEY}",
                    **limits,
                }
            },
            "default_vendor": "primary",
        },
        OPENAI_API_KEY=KEY,
    )
    stack.start_worker(["llm.primary"], concurrency=20, name="w1")
    stack.start_worker(["llm.primary"], concurrency=20, name="w2")
    with stack.environment():
        return Client.from_env()


def arrivals_in_window(stack: Stack, jobs: int) -> list[float]:
    """When requests reached the vendor during the WINDOW_S after the first one."""
    first = wait_for(stack.received, 30, "the first request at the vendor")[0]["at"]
    end = first + WINDOW_S
    wait_for(lambda: time.time() > end + 0.5, WINDOW_S + 5, "the window to pass")
    times = [r["at"] for r in stack.received()]
    assert len(times) < jobs, "the backlog ran dry: the limit was never the bound"
    return [t for t in times if first <= t < end]


def tasks_run_by(stack: Stack) -> list[int]:
    return [w.log_text().count("dispatch.run_job[") for w in stack.workers]


def test_two_workers_share_a_600_rpm_limit(stack: Stack) -> None:
    client = limited_client(stack, rpm=600, rpm_burst=60)
    jobs = 600
    request = Request(model="gpt-4o-mini", messages=[Message(role="user", content="hi")])
    ids = [client.submit(request) for _ in range(jobs)]

    arrived = arrivals_in_window(stack, jobs)

    limit = 600 * WINDOW_S / 60.0  # 150
    spread = 600 * ARRIVAL_SPREAD_S / 60.0  # 20
    print(f"600 rpm, 2 workers: {len(arrived)} requests in {WINDOW_S:g} s (limit {limit:g} + 60)")
    assert 0.9 * limit <= len(arrived) <= limit + 60 + spread
    assert all(count > 0 for count in tasks_run_by(stack)), "both workers should take jobs"
    # Jobs held back wait in the queue's own records, never failing for it.
    states = {client.get(job_id).status for job_id in ids}
    assert JobStatus.FAILED not in states
    # The dashboard's view of the same: traffic of the last minute against the limit.
    (status,) = client.vendor_status()
    assert (status.name, status.rpm_limit, status.errors) == ("primary", 600, 0)
    assert 0.9 * limit <= status.requests_per_minute <= 600 + 60 + spread
    assert status.requests >= len(arrived)
    assert 0 <= status.in_flight <= 40


def test_two_workers_share_a_tpm_limit_settled_with_the_reported_usage(stack: Stack) -> None:
    # 100 one-letter words: the estimate is 54 prompt tokens + max_tokens 10 = 64, but the
    # stand-in counts 100 prompt tokens + 10 completion tokens = 110. Only settling each
    # call with the reported usage keeps the tokens that reach the vendor within the limit.
    client = limited_client(stack, tpm=3_000, tpm_burst=500)
    jobs = 600
    request = Request(
        model="gpt-4o-mini",
        messages=[Message(role="user", content="a " * 100)],
        max_tokens=10,
    )
    ids = [client.submit(request) for _ in range(jobs)]

    arrived = arrivals_in_window(stack, jobs)

    done = next(r for r in map(client.get, ids) if r.status is JobStatus.SUCCEEDED)
    assert done.usage is not None
    per_call = done.usage.total_tokens
    assert per_call == 110
    used = len(arrived) * per_call
    limit = 3_000 * WINDOW_S / 60.0  # 750 tokens
    spread = 3_000 * ARRIVAL_SPREAD_S / 60.0
    print(f"3,000 tpm, 2 workers: {used} tokens in {WINDOW_S:g} s (limit {limit:g} + 500)")
    assert 0.9 * limit <= used <= limit + 500 + spread + per_call


def test_a_circuit_opens_after_failures_sends_traffic_to_the_fallback_and_a_probe_closes_it(
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
                    "headers": {"x-fake-fault": "500@3"},  # its first three calls fail
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
            "default_vendor": "primary",
            "retry_policy": {"max_retries": 0},
            "circuit_breaker": {"failure_threshold": 3, "reset_timeout_s": 3},
        },
        OPENAI_API_KEY=KEY,
    )
    stack.start_worker(["llm.primary", "llm.backup"], concurrency=4)
    with stack.environment():
        client = Client.from_env()
    smart = Request(model="smart", messages=[Message(role="user", content="hi")])

    def calls_to_primary() -> int:
        # Both vendors are the stand-in's OpenAI endpoint; only primary sends the fault header.
        return sum(1 for r in stack.received() if "x-fake-fault" in r["headers"])

    # Three failures in a row on primary, each answered by the fallback, open its circuit.
    assert [client.send(smart, timeout_s=20).vendor for _ in range(3)] == ["backup"] * 3
    assert calls_to_primary() == 3
    opened_at = time.time()

    # While it is open, jobs go to the fallback without a call to primary.
    assert [client.send(smart, timeout_s=20).vendor for _ in range(3)] == ["backup"] * 3
    assert calls_to_primary() == 3

    # After the reset timeout one job is the half-open probe; its success closes the circuit.
    wait_for(lambda: time.time() > opened_at + 3.5, 10, "the reset timeout to pass")
    preferring = smart.model_copy(update={"model": "gpt-4o", "vendor": "primary"})
    assert client.send(preferring, timeout_s=20).vendor == "primary"
    assert calls_to_primary() == 4
    closed_at = time.time()
    wait_for(lambda: time.time() > closed_at + 1.1, 5, "the producer's view to refresh")
    assert client.send(smart, timeout_s=20).vendor == "primary"


def test_a_tenants_limit_holds_it_to_its_share_while_another_tenant_flows(stack: Stack) -> None:
    client = limited_client(stack, tenant_limit={"rpm": 120, "rpm_burst": 5})  # 2 a second each
    noisy = Request(
        model="gpt-4o-mini", messages=[Message(role="user", content="hi")], user="noisy"
    )
    quiet = noisy.model_copy(update={"user": "quiet"})
    noisy_ids = [client.submit(noisy) for _ in range(150)]

    started = time.monotonic()
    quiet_ids = [client.submit(quiet) for _ in range(5)]
    for job_id in quiet_ids:
        assert client.wait(job_id, timeout_s=20).content
    quiet_s = time.monotonic() - started

    window_s = 8.0
    first = wait_for(
        lambda: min(
            (r.finished_at for r in map(client.get, noisy_ids) if r.finished_at), default=None
        ),
        20,
        "the first of the noisy tenant's jobs to end",
    )
    end = first.timestamp() + window_s
    wait_for(lambda: time.time() > end + 0.5, window_s + 5, "the window to pass")
    ended = [r.finished_at for r in map(client.get, noisy_ids) if r.finished_at]
    in_window = [t for t in ended if t.timestamp() < end]

    print(
        f"tenant limit 120 rpm: quiet's 5 jobs in {quiet_s:.2f} s; "
        f"noisy {len(in_window)} in {window_s:g} s"
    )
    assert quiet_s < 5.0  # its own bucket was full: no waiting behind the noisy backlog
    assert len(ended) < len(noisy_ids)  # the noisy backlog is still there
    share = 120 * window_s / 60.0  # 16
    assert 0.9 * share <= len(in_window) <= share + 5 + 120 * ARRIVAL_SPREAD_S / 60.0
