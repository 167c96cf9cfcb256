"""The soak, scaled down: thousands of jobs through two workers, then their keys expire.

`bench/soak.py` runs 50,000 jobs and reports memory; this checks, in the normal
suite, what must hold at any size: with a short LLMDISPATCH_JOB_TTL_S every
job (single or batch item) succeeds exactly once across two real worker
processes, and once the TTL has passed nothing per job or per batch is left in
Redis, only the bounded keys: statistics, histograms, per-minute vendor
counters and kombu's bindings.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client
from tests.integration.stack import Stack, running_stack, wait_for

pytestmark = pytest.mark.integration

KEY = "sk-soak-test-0123456789abcdef"
PREFIX = "itest"
VENDOR = "standin"
QUEUES = [f"llm.{VENDOR}", f"llm.{VENDOR}.batch"]
JOB_TTL_S = 3
SINGLES = 1_500
BATCHES = (500, 500, 500)
JOBS = SINGLES + sum(BATCHES)
# The keys that outlive every job, as `key_pattern` writes them.
MINUTE_KEYS = f"{PREFIX}:vendor:{VENDOR}:minute:{{n}}"  # expire after 3 min, not the TTL
BOUNDED_KEYS = {
    f"{PREFIX}:stats",
    f"{PREFIX}:hist:latency:_all",
    f"{PREFIX}:hist:latency:{VENDOR}",
    f"{PREFIX}:hist:queue_wait",
    f"{PREFIX}:ready:seq",  # the submits' order counter: one number
    f"{PREFIX}:workers",  # the living workers' heartbeats: one field per worker
    MINUTE_KEYS,
    # kombu's routing tables for our queues and the workers' control queues.
    "_kombu.binding.celery.pidbox",
    f"_kombu.binding.llm.{VENDOR}",
    f"_kombu.binding.llm.{VENDOR}.batch",
    f"_kombu.binding_permanent.llm.{VENDOR}",
    f"_kombu.binding_permanent.llm.{VENDOR}.batch",
    "_kombu.binding_deadlines",
}
_HEX_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
_NUMBER = re.compile(r"(?<=:)\d+(?=:|$)")


def key_pattern(key: str) -> str:
    """A key name with its ids and numbers replaced: `itest:job:{id}:events`."""
    return _NUMBER.sub("{n}", _HEX_ID.sub("{id}", key))


def key_patterns(client: redis.Redis) -> Counter[str]:
    return Counter(key_pattern(key) for key in client.scan_iter(count=1000))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        yield running


def configure(stack: Stack) -> Client:
    stack.configure(
        {
            "vendors": {
                VENDOR: {
                    "type": "openai_compatible",
                    "base_url": "{url}/v1",
                    "models": ["*"],
                    "timeout_s": 10,
                    "api_key": "${OPENAI_API_KEY}",
                }
            }
        },
        OPENAI_API_KEY=KEY,
        LLMDISPATCH_JOB_TTL_S=str(JOB_TTL_S),
        LLMDISPATCH_HEALTH_CHECK_INTERVAL_S="0",
    )
    with stack.environment():
        return Client.from_env()


def prompts(count: int, tag: str) -> list[dict[str, Any]]:
    return [
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{tag}-{i}"}]}
        for i in range(count)
    ]


def test_3000_jobs_on_two_workers_succeed_once_and_leave_only_bounded_keys_after_the_ttl(
    stack: Stack,
) -> None:
    client = configure(stack)
    for name in ("w1", "w2"):
        stack.start_worker(QUEUES, concurrency=50, name=name)
    requests = prompts(SINGLES, "single")
    for k, size in enumerate(BATCHES):
        client.submit_batch(prompts(size, f"batch{k}"))
        requests += prompts(size, f"batch{k}")
    for request in requests[:SINGLES]:
        client.submit(request)

    wait_for(lambda: client.stats().total_requests >= JOBS, 90, f"{JOBS} jobs to end")
    stats = client.stats()
    assert (stats.total_requests, stats.successful_requests) == (JOBS, JOBS)
    assert (stats.failed_requests, stats.cancelled_requests, stats.retries) == (0, 0, 0)
    assert stats.vendor_stats[VENDOR].successes == JOBS
    seen = Counter(r["body"]["messages"][-1]["content"] for r in stack.received())
    assert seen == Counter(r["messages"][0]["content"] for r in requests), "each call once"

    redis_client = stack.redis.client(decode_responses=True)
    left: list[Counter[str]] = []

    def only_bounded_keys_left() -> bool:
        # The sweeper's turn comes and goes with its passes (it expires within one).
        left.append(key_patterns(redis_client) - Counter({f"{PREFIX}:sweep:turn": 1}))
        return set(left[-1]) == BOUNDED_KEYS

    try:
        with suppress(AssertionError):  # timed out: the assertions below say what was left
            wait_for(only_bounded_keys_left, JOB_TTL_S + 30, "job and batch keys to expire")
        assert set(left[-1]) == BOUNDED_KEYS
        assert all(n == 1 for pattern, n in left[-1].items() if pattern != MINUTE_KEYS)
        assert left[-1][MINUTE_KEYS] <= 3, "one per minute the jobs ran in, kept 3 minutes"
    finally:
        redis_client.close()
        client.close()
