"""Batches end to end: private real Redis, real worker processes, HTTP stand-in vendors.

Faults ride in the prompts (`[fault:500@1 item-7]`: that item's first call gets
a 500), so each item's fate is known in advance and every result can be
checked exactly, in input order.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import BatchRecord, JobEventKind, JobStatus
from producer import Client
from producer.batch_files import BatchFileError
from tests.integration.stack import Stack, running_stack, two_vendors, wait_for

pytestmark = pytest.mark.integration

KEY = "sk-batch-test-0123456789abcdef"
QUEUES = ["llm.primary", "llm.primary.batch", "llm.backup", "llm.backup.batch"]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        yield running


def configure(stack: Stack, *, primary_headers: dict[str, str] | None = None, **env: str) -> Client:
    stack.configure(
        two_vendors(
            primary_headers={"x-vendor": "primary", **(primary_headers or {})},
            backup_headers={"x-vendor": "backup"},
            circuit_breaker={"failure_threshold": 5, "reset_timeout_s": 1.0},
        ),
        **{
            "OPENAI_API_KEY": KEY,
            "LLMDISPATCH_VISIBILITY_TIMEOUT_S": "30",
            "LLMDISPATCH_HEALTH_CHECK_INTERVAL_S": "0",
            **env,
        },
    )
    with stack.environment():
        return Client.from_env()


def post(stack: Stack, path: str) -> None:
    request = urllib.request.Request(  # noqa: S310 - loopback stand-in
        f"{stack.standin.url}{path}", method="POST", data=b""
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback stand-in
        pass


def prompts_seen(stack: Stack) -> list[str]:
    """The last user message of every call the stand-ins received."""
    return [r["body"]["messages"][-1]["content"] for r in stack.received()]


def assert_counts_match_items(record: BatchRecord, client: Client) -> None:
    items = client.batch_results(record.batch_id)
    by_status = {s: sum(1 for i in items if i.status is s) for s in JobStatus}
    counts = record.counts
    assert counts.total == len(items)
    assert (counts.queued, counts.running) == (
        by_status[JobStatus.QUEUED],
        by_status[JobStatus.RUNNING],
    )
    assert counts.succeeded == by_status[JobStatus.SUCCEEDED]
    assert counts.failed == by_status[JobStatus.FAILED]
    assert counts.cancelled == by_status[JobStatus.CANCELLED]


def test_a_2000_prompt_batch_with_faults_has_one_result_per_line_in_order(stack: Stack) -> None:
    client = configure(stack)
    stack.start_worker(QUEUES, concurrency=50)
    requests: list[dict[str, Any]] = []
    final_failures = set()
    for i in range(2_000):
        text = f"prompt {i}"
        if i % 20 == 3:  # 5 %: one 500, then the retry succeeds
            text += f" [fault:500@1 item-{i}]"
        elif i % 250 == 7:  # a 429 asking everyone to wait 1 s, then success
            text += f" [fault:429@1,retry-after:1 item-{i}]"
        elif i % 200 == 11:  # an invalid key: final, no retry, no fallback
            text += f" [fault:401 item-{i}]"
            final_failures.add(i)
        requests.append(
            {
                "custom_id": f"row-{i}",
                "model": "smart",
                "messages": [{"role": "user", "content": text}],
            }
        )

    batch_id = client.submit_batch(requests)
    # Primary goes down for a while once the batch is under way: its items fall back.
    wait_for(lambda: client.batch_status(batch_id).counts.succeeded >= 200, 60, "200 items done")
    post(stack, "/__down/2?x-vendor=primary")
    seen: list[BatchRecord] = []
    record = client.wait_batch(batch_id, timeout_s=240, on_progress=seen.append, interval_s=0.5)

    assert record.done
    assert record.finished_at is not None
    assert record.counts.total == 2_000
    assert record.counts.failed == len(final_failures)
    assert record.counts.succeeded == 2_000 - len(final_failures)
    assert len(seen) >= 2
    assert seen[-1].done
    items = client.batch_results(batch_id)
    assert [item.custom_id for item in items] == [f"row-{i}" for i in range(2_000)]
    assert [item.index for item in items] == list(range(2_000))
    assert len({item.job_id for item in items}) == 2_000
    for i, item in enumerate(items):
        assert (item.response is None) != (item.error is None), item
        if i in final_failures:
            assert item.status is JobStatus.FAILED
            assert item.error is not None
            assert item.error.kind == "auth"
        else:
            assert item.status is JobStatus.SUCCEEDED
            assert item.response is not None
            assert item.response.content == f"echo: {requests[i]['messages'][0]['content']}"
    # Every job ended exactly once; the statistics counted each once.
    for item in items[::97]:
        events = client.get(item.job_id).events
        terminal = [e for e in events if e.kind in (JobEventKind.SUCCEEDED, JobEventKind.FAILED)]
        assert len(terminal) == 1
    stats = client.stats()
    assert stats.total_requests == 2_000
    assert stats.failed_requests == len(final_failures)
    assert stats.retries >= 100  # the 5 % of 500s at least
    assert stats.vendor_stats["backup"].successes > 0, "the primary's outage fell back"
    assert record.prompt_tokens > 0
    assert record.completion_tokens > 0
    assert_counts_match_items(record, client)


def test_a_jsonl_file_with_one_bad_line_is_refused_whole_and_writes_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    client = configure(stack)
    path = tmp_path / "input.jsonl"
    lines = []
    for i in range(1, 1_001):
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"}]}
        if i == 537:
            body["temperature"] = 7  # out of range
        lines.append(
            json.dumps(
                {
                    "custom_id": f"r{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": body,
                }
            )
        )
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(BatchFileError) as refused:
        client.submit_batch(path)

    assert refused.value.problems == [(537, refused.value.problems[0][1])]
    assert "line 537" in str(refused.value)
    assert "temperature" in str(refused.value)
    assert client.redis.dbsize() == 0, "nothing of the file reached Redis"


def test_cancel_midway_says_exactly_which_items_ran(stack: Stack) -> None:
    client = configure(
        stack,
        primary_headers={"x-fake-fault": "slow:200"},
        LLMDISPATCH_BATCH_WINDOW="1",  # 50 items at a time
    )
    stack.start_worker(QUEUES, concurrency=20)
    batch_id = client.submit_batch(
        [
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"c{i}"}]}
            for i in range(300)
        ]
    )
    wait_for(lambda: client.batch_status(batch_id).counts.succeeded >= 30, 60, "30 items done")

    cancelled = client.cancel_batch(batch_id)

    record = client.batch_status(batch_id)
    assert record.done
    assert record.cancelled_at is not None
    assert record.counts.cancelled == cancelled > 0
    assert record.counts.succeeded + record.counts.cancelled == 300
    items = client.batch_results(batch_id)
    # A vendor call was made for exactly the items that started; wait for the last
    # running ones to have been sent, then compare the stand-in's log with the records.
    started = sum(item.attempts for item in items)
    wait_for(lambda: len(stack.received()) >= started, 30, "the started calls to arrive")
    seen = prompts_seen(stack)
    assert len(seen) == started
    for i, item in enumerate(items):
        ran = seen.count(f"c{i}")
        assert ran == item.attempts
        if item.status is JobStatus.SUCCEEDED:
            assert ran == 1
            assert item.response is not None
        else:
            assert item.status is JobStatus.CANCELLED
            assert item.error is not None
            assert item.error.kind == "cancelled"
    never_ran = [item for item in items if item.attempts == 0]
    assert len(never_ran) >= 150, "most queued items never ran"
    assert all(item.status is JobStatus.CANCELLED for item in never_ran)
    assert client.batch_status(batch_id).counts == record.counts, "nothing moved after the end"


def test_retry_failed_turns_the_failed_items_into_successes(stack: Stack) -> None:
    client = configure(stack)
    stack.start_worker(QUEUES, concurrency=20)
    requests = []
    for i in range(100):
        text = f"r{i}" + (f" [fault:401@1 item-{i}]" if i % 10 == 0 else "")
        requests.append({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
    batch_id = client.submit_batch(requests)
    first = client.wait_batch(batch_id, timeout_s=60)
    assert (first.counts.succeeded, first.counts.failed) == (90, 10)
    failed_jobs = {i.index: i.job_id for i in client.batch_results(batch_id) if i.error}

    assert client.retry_failed(batch_id) == 10
    assert client.retry_failed(batch_id) == 0 or client.batch_status(batch_id).counts.failed == 0

    again = client.wait_batch(batch_id, timeout_s=60)
    assert (again.counts.succeeded, again.counts.failed, again.counts.total) == (100, 0, 100)
    items = client.batch_results(batch_id)
    assert [i.custom_id for i in items] == [f"request-{n}" for n in range(1, 101)]
    for index, old_job in failed_jobs.items():
        assert items[index].job_id != old_job
        assert items[index].response is not None
        assert items[index].response.content == f"echo: {requests[index]['messages'][0]['content']}"
        assert client.get(old_job).status is JobStatus.FAILED, "the failed job keeps its record"
    assert_counts_match_items(again, client)


def test_an_interactive_job_does_not_wait_behind_a_draining_10000_item_batch(
    stack: Stack,
) -> None:
    client = configure(stack, primary_headers={"x-fake-fault": "slow:100"})
    stack.start_worker(QUEUES, concurrency=50)
    batch_id = client.submit_batch(
        [
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"b{i}"}]}
            for i in range(10_000)
        ]
    )
    wait_for(
        lambda: client.batch_status(batch_id).counts.succeeded >= 500, 60, "the batch to drain"
    )

    response = client.send(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "now"}]}, timeout_s=30
    )

    pending = client.batch_status(batch_id).counts.pending
    assert response.content == "echo: now"
    assert pending > 5_000, "the interactive job ended while most of the batch still waited"
    interactive = [r for r in stack.received() if r["body"]["messages"][-1]["content"] == "now"]
    assert len(interactive) == 1
    assert client.cancel_batch(batch_id) > 0


def test_a_killed_workers_messages_come_back_within_90_s_without_the_visibility_timeout(
    stack: Stack,
) -> None:
    # The default visibility timeout (an hour): only the heartbeat can bring them back soon.
    client = configure(
        stack, primary_headers={"x-fake-fault": "slow:200"}, LLMDISPATCH_VISIBILITY_TIMEOUT_S="3600"
    )
    doomed = stack.start_worker(QUEUES, concurrency=20, name="doomed")
    survivor = stack.start_worker(QUEUES, concurrency=20, name="survivor")
    items = 2_000
    batch_id = client.submit_batch(
        [
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"h{i}"}]}
            for i in range(items)
        ]
    )
    wait_for(lambda: client.batch_status(batch_id).counts.succeeded >= 300, 90, "300 items done")

    doomed.kill()
    killed_at = time.monotonic()
    running_at_kill = client.batch_status(batch_id).counts.running
    record = client.wait_batch(batch_id, timeout_s=90)

    assert time.monotonic() - killed_at < 90
    assert (record.counts.succeeded, record.counts.total) == (items, items)
    assert running_at_kill > 0, "the kill should catch items mid-call"
    assert "worker doomed@" in survivor.log_text()
    assert "stopped beating" in survivor.log_text()
    results = client.batch_results(batch_id)
    assert [r.response.content if r.response else None for r in results] == [
        f"echo: h{i}" for i in range(items)
    ]
    stats = client.stats()
    assert (stats.total_requests, stats.successful_requests) == (items, items), "each once"
    assert_counts_match_items(record, client)


def test_a_worker_killed_mid_batch_leaves_every_item_ended_once(stack: Stack) -> None:
    client = configure(
        stack,
        primary_headers={"x-fake-fault": "slow:300"},
        LLMDISPATCH_VISIBILITY_TIMEOUT_S="6",
        LLMDISPATCH_BATCH_WINDOW="2",
    )
    first = stack.start_worker(QUEUES, concurrency=20, name="w1")
    batch_id = client.submit_batch(
        [
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"k{i}"}]}
            for i in range(600)
        ]
    )
    wait_for(lambda: client.batch_status(batch_id).counts.succeeded >= 100, 60, "100 items done")

    first.kill()
    running_at_kill = client.batch_status(batch_id).counts.running
    stack.start_worker(QUEUES, concurrency=20, name="w2")
    record = client.wait_batch(batch_id, timeout_s=120)

    assert (record.counts.succeeded, record.counts.total) == (600, 600)
    assert running_at_kill > 0, "the kill should catch items mid-call"
    items = client.batch_results(batch_id)
    assert all(item.response is not None for item in items)
    assert [item.response.content for item in items if item.response] == [
        f"echo: k{i}" for i in range(600)
    ]
    seen = prompts_seen(stack)
    # At least once: every item reached the vendor; only those cut off by the kill twice.
    repeats = [i for i in range(600) if seen.count(f"k{i}") > 1]
    assert all(seen.count(f"k{i}") >= 1 for i in range(600))
    assert len(repeats) <= running_at_kill
    stats = client.stats()
    assert (stats.total_requests, stats.successful_requests) == (600, 600)
    assert_counts_match_items(record, client)
