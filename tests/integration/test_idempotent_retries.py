"""A submit that failed while Redis was frozen, retried with its key, runs exactly once.

Redis is stopped (SIGSTOP) while five producers submit: each raises
`StoreUnavailable` naming the job it tried to write; whether the write landed
is unknown to them. Once Redis runs again (SIGCONT) each retries with the same
idempotency key and gets the same job id, and the vendor is called once per key.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher import Request, StoreUnavailable
from producer import Client
from tests.integration.stack import Stack, running_stack, wait_for

pytestmark = pytest.mark.integration

KEY = "sk-idem-test-0123456789abcdef"
PRODUCERS = 5


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        running.configure(
            {
                "vendors": {
                    "primary": {
                        "type": "openai",
                        "base_url": "{url}/v1",
                        "api_key": "${OPENAI_API_KEY}",
                        "models": ["gpt-*"],
                    }
                }
            },
            OPENAI_API_KEY=KEY,
            LLMDISPATCH_HEALTH_CHECK_INTERVAL_S="0",
        )
        yield running


def request(n: int) -> Request:
    return Request(model="gpt-4o-mini", messages=[{"role": "user", "content": f"idem {n}"}])


def test_submits_retried_with_their_keys_after_a_frozen_redis_run_once_each(stack: Stack) -> None:
    with stack.environment():
        clients = [Client.from_env() for _ in range(PRODUCERS)]
    stack.start_worker(["llm.primary"])
    for client in clients:  # each has read its live state: the next submit goes to Redis
        client.submit(request(-1), idempotency_key="warm-up")
    pid = stack.redis.pid
    assert pid is not None

    failures: dict[int, StoreUnavailable] = {}

    def submit(n: int) -> None:
        try:
            clients[n].submit(request(n), idempotency_key=f"key-{n}")
        except StoreUnavailable as exc:
            failures[n] = exc

    os.kill(pid, signal.SIGSTOP)
    try:
        threads = [threading.Thread(target=submit, args=(n,)) for n in range(PRODUCERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)

    assert sorted(failures) == list(range(PRODUCERS)), "every submit met the frozen Redis"
    assert all(failure.job_id for failure in failures.values()), "each names the job it tried"
    # Which of the failed writes landed after all, once Redis ran again.
    landed = {n for n, f in failures.items() if clients[n].redis.exists(f"itest:job:{f.job_id}")}
    assert all(failures[n].may_have_been_written for n in landed)
    retried = {n: clients[n].submit(request(n), idempotency_key=f"key-{n}") for n in failures}
    for n, job_id in retried.items():
        if n in landed:
            assert job_id == failures[n].job_id, "the retry found the job that landed"
        assert clients[n].wait(job_id, timeout_s=60).content == f"echo: idem {n}"

    def calls() -> Counter[str]:
        return Counter(r["body"]["messages"][-1]["content"] for r in stack.received())

    wait_for(lambda: all(calls()[f"idem {n}"] >= 1 for n in range(PRODUCERS)), 60, "the calls")
    assert all(calls()[f"idem {n}"] == 1 for n in range(PRODUCERS)), calls()
    for n in range(PRODUCERS):  # and the key keeps naming that job
        assert clients[n].submit(request(n), idempotency_key=f"key-{n}") == retried[n]
    for client in clients:
        client.close()
