"""The queue end to end: producer, private Redis, real worker processes, vendors over HTTP."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher import (
    JobCancelled,
    JobEventKind,
    JobStatus,
    Message,
    Request,
    VendorAuthError,
    VendorTimeout,
)
from producer import Client
from tests.integration.stack import Stack, running_stack, two_vendors, wait_for

pytestmark = pytest.mark.integration

KEY = "sk-queue-test-0123456789abcdef"
PROMPT = [Message(role="user", content="hello there")]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        yield running


def configure(stack: Stack, env: dict[str, str] | None = None, **faults: str) -> Client:
    headers = {name: {"x-fake-fault": fault} for name, fault in faults.items()}
    stack.configure(
        two_vendors(
            timeout_s=4,
            primary_headers=headers.get("primary"),
            backup_headers=headers.get("backup"),
        ),
        OPENAI_API_KEY=KEY,
        LLMDISPATCH_VISIBILITY_TIMEOUT_S="6",
        **(env or {}),
    )
    with stack.environment():
        return Client.from_env()


def test_a_job_runs_on_its_vendor_and_its_result_is_polled(stack: Stack) -> None:
    client = configure(stack)
    stack.start_worker(["llm.primary", "llm.backup"])
    job_id = client.submit(Request(model="gpt-4o-mini", messages=PROMPT))
    response = client.wait(job_id, timeout_s=30)
    assert response.content == "echo: hello there"
    assert response.vendor == "primary"
    record = client.get(job_id)
    assert record.status is JobStatus.SUCCEEDED
    assert [e.kind for e in record.events] == [
        JobEventKind.QUEUED,
        JobEventKind.STARTED,
        JobEventKind.SUCCEEDED,
    ]
    assert record.queue_wait_ms is not None
    assert record.vendor_latency_ms is not None
    assert record.total_ms is not None
    sent = stack.received()
    assert len(sent) == 1
    assert sent[0]["headers"]["authorization"] == f"Bearer {KEY}"


def test_a_429_with_retry_after_2_is_retried_no_sooner_than_2_seconds(stack: Stack) -> None:
    client = configure(stack, primary="429@1,retry-after:2")
    stack.start_worker(["llm.primary", "llm.backup"])
    job_id = client.submit(Request(model="gpt-4o-mini", messages=PROMPT, allow_fallback=False))
    assert client.wait(job_id, timeout_s=30).content == "echo: hello there"
    first, second = stack.received()
    assert second["at"] - first["at"] >= 2.0
    retry = next(e for e in client.get(job_id).events if e.kind is JobEventKind.RETRY)
    assert retry.delay_s is not None
    assert retry.delay_s >= 2.0


def test_server_errors_on_every_attempt_fall_back_to_the_groups_next_vendor_and_model(
    stack: Stack,
) -> None:
    client = configure(stack, primary="500")
    stack.start_worker(["llm.primary", "llm.backup"])
    job_id = client.submit(Request(model="smart", messages=PROMPT))
    response = client.wait(job_id, timeout_s=30)
    assert response.vendor == "backup"
    sent = stack.received()
    assert [r["vendor"] for r in sent] == ["openai"] * 3 + ["openai"]  # both speak OpenAI's format
    assert [r["body"]["model"] for r in sent] == ["gpt-4o"] * 3 + ["llama-3-70b"]
    kinds = [e.kind for e in client.get(job_id).events]
    assert kinds.count(JobEventKind.RETRY) == 2
    assert kinds.count(JobEventKind.REROUTED) == 1
    stats = client.stats()
    assert stats.fallbacks == 1
    assert stats.retries == 2


def test_an_auth_error_fails_at_once_without_retrying(stack: Stack) -> None:
    client = configure(stack, primary="401")
    stack.start_worker(["llm.primary", "llm.backup"])
    job_id = client.submit(Request(model="smart", messages=PROMPT))
    with pytest.raises(VendorAuthError) as caught:
        client.wait(job_id, timeout_s=30)
    assert KEY not in str(caught.value)
    assert len(stack.received()) == 1
    assert client.get(job_id).status is JobStatus.FAILED


def test_a_job_cancelled_before_it_runs_never_reaches_the_vendor(stack: Stack) -> None:
    client = configure(stack)
    job_id = client.submit(Request(model="gpt-4o-mini", messages=PROMPT))
    assert client.cancel(job_id) is True
    stack.start_worker(["llm.primary", "llm.backup"])
    # A second job queued behind it proves the worker has drained the queue.
    later = client.submit(Request(model="gpt-4o-mini", messages=PROMPT))
    client.wait(later, timeout_s=30)
    with pytest.raises(JobCancelled):
        client.wait(job_id, timeout_s=1)
    assert len(stack.received()) == 1
    assert client.get(job_id).status is JobStatus.CANCELLED


def test_a_deadline_that_expires_during_backoff_fails_the_job_with_a_timeout(
    stack: Stack,
) -> None:
    client = configure(stack, primary="429,retry-after:30")
    stack.start_worker(["llm.primary", "llm.backup"])
    started = time.monotonic()
    job_id = client.submit(
        Request(model="gpt-4o-mini", messages=PROMPT, timeout_s=3, allow_fallback=False)
    )
    with pytest.raises(VendorTimeout, match="deadline"):
        client.wait(job_id, timeout_s=30)
    assert time.monotonic() - started < 10
    assert len(stack.received()) == 1


def test_a_worker_killed_mid_call_is_redelivered_and_the_job_ends_once(stack: Stack) -> None:
    client = configure(stack, primary="slow:1500")
    first = stack.start_worker(["llm.primary"], name="doomed")
    job_id = client.submit(Request(model="gpt-4o-mini", messages=PROMPT, allow_fallback=False))
    wait_for(lambda: len(stack.received()) >= 1, 30, "the vendor to receive the call")
    first.kill()
    stack.start_worker(["llm.primary"], name="survivor")
    response = client.wait(job_id, timeout_s=60)
    assert response.content == "echo: hello there"
    record = client.get(job_id)
    assert [e.kind for e in record.events].count(JobEventKind.SUCCEEDED) == 1
    assert len(stack.received()) == 2  # the killed call, and the redelivered one
    stats = client.stats()
    assert stats.total_requests == 1
    assert stats.successful_requests == 1


def test_stats_after_a_mixed_run_equal_the_counts_from_the_job_records(stack: Stack) -> None:
    client = configure(stack)
    # Past their 1 ms deadline long before any worker is up to claim them.
    late = [
        client.submit(Request(model="gpt-4o-mini", messages=PROMPT, timeout_s=0.001))
        for _ in range(2)
    ]
    stack.start_worker(["llm.primary"])  # nobody serves llm.backup: its jobs wait
    ok = [client.submit(Request(model="gpt-4o-mini", messages=PROMPT)) for _ in range(6)]
    parked = [
        client.submit(
            Request(model="gpt-4o-mini", messages=PROMPT, vendor="backup", allow_fallback=False)
        )
        for _ in range(3)
    ]
    for job_id in parked:
        assert client.cancel(job_id)
    jobs = [*ok, *late, *parked]
    for job_id in jobs:
        wait_for(lambda j=job_id: client.get(j).status.is_terminal, 30, f"job {job_id} to end")
    records = [client.get(j) for j in jobs]
    stats = client.stats()
    ended = [r for r in records if r.status is not JobStatus.CANCELLED]
    assert stats.total_requests == len(ended) == 8
    assert stats.successful_requests == sum(r.status is JobStatus.SUCCEEDED for r in records)
    assert stats.failed_requests == sum(r.status is JobStatus.FAILED for r in records) == 2
    assert stats.cancelled_requests == sum(r.status is JobStatus.CANCELLED for r in records)
    assert stats.prompt_tokens == sum(r.usage.prompt_tokens for r in records if r.usage)
    assert stats.completion_tokens == sum(r.usage.completion_tokens for r in records if r.usage)
    assert stats.total_cost_usd == pytest.approx(sum(r.cost_usd for r in records))
    by_vendor = stats.vendor_stats["primary"]
    assert by_vendor.successes == sum(
        1 for r in records if r.response is not None and r.response.vendor == "primary"
    )
    assert by_vendor.requests == by_vendor.successes + by_vendor.failures


def test_two_workers_share_a_backlog_once_one_holds_its_most_in_flight(stack: Stack) -> None:
    client = configure(stack, {"LLMDISPATCH_WORKER_MAX_IN_FLIGHT": "10"}, primary="slow:200")
    workers = [stack.start_worker(["llm.primary"], concurrency=20, name=n) for n in ("a", "b")]
    prompts = [f"share {i}" for i in range(200)]
    job_ids = [
        client.submit(Request(model="gpt-4o-mini", messages=[Message(role="user", content=p)]))
        for p in prompts
    ]

    replies = [client.wait(job_id, timeout_s=60).content for job_id in job_ids]

    assert replies == [f"echo: {p}" for p in prompts]
    seen = Counter(r["body"]["messages"][-1]["content"] for r in stack.received())
    assert all(seen[p] == 1 for p in prompts), "each job called once"
    # Each bell's result, in its worker's log, counts the jobs it ran.
    bell_result = r"dispatch\.run_queued\[[^\]]+\] succeeded in \S+: \{[^}]*'succeeded': (\d+)"
    ran = {w.name: sum(map(int, re.findall(bell_result, w.log_text()))) for w in workers}
    assert sum(ran.values()) == len(prompts), ran
    assert all(count >= 40 for count in ran.values()), ran
    bells = sum(
        len(re.findall(r"dispatch\.run_queued\[\S+\] succeeded", w.log_text())) for w in workers
    )
    assert bells < len(prompts), f"{bells} bells for {len(prompts)} jobs"
