"""Idempotent submits: the same key makes one job (or batch), whatever became of the first."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from dispatcher import InvalidRequest, Settings, StoreUnavailable
from producer import Client

REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "once only"}]}


@pytest.fixture
def client(fake_or_real_redis: redis.Redis) -> Client:
    settings = Settings.load(openai_api_key="sk-test-0123456789", key_prefix="llmd-idem")
    return Client(settings, redis_client=fake_or_real_redis)


def jobs_in_redis(client: Client) -> list[str]:
    return sorted(
        key.decode() if isinstance(key, bytes) else key
        for key in client.redis.scan_iter(match="llmd-idem:job:*")
        if not (key.decode() if isinstance(key, bytes) else key).count(":") > 2
    )


def test_the_same_key_returns_the_same_job_and_writes_nothing_more(client: Client) -> None:
    first = client.submit(REQUEST, idempotency_key="order-42")
    again = client.submit(REQUEST, idempotency_key="order-42")
    other = client.submit(REQUEST, idempotency_key="order-43")

    assert again == first
    assert other != first
    assert jobs_in_redis(client) == sorted(f"llmd-idem:job:{i}" for i in (first, other))
    assert client.redis.zcard(client.store.keys.ready("llm.openai")) == 2


def test_a_key_names_its_job_even_for_a_different_request(client: Client) -> None:
    first = client.submit(REQUEST, idempotency_key="k")
    changed = {**REQUEST, "messages": [{"role": "user", "content": "something else"}]}

    assert client.submit(changed, idempotency_key="k") == first
    record = client.get(first)
    assert record.request.messages[0].content == "once only"


def test_racing_submits_with_one_key_make_one_job(client: Client) -> None:
    results: list[str] = []
    barrier = threading.Barrier(8)

    def submit() -> None:
        barrier.wait()
        results.append(client.submit(REQUEST, idempotency_key="race"))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(results) == 8
    assert len(set(results)) == 1
    assert jobs_in_redis(client) == [f"llmd-idem:job:{results[0]}"]


@pytest.mark.parametrize("key", ["", "x" * 257, "line\nbreak", "nul\x00"])
def test_an_unusable_key_is_refused_and_nothing_is_written(client: Client, key: str) -> None:
    with pytest.raises(InvalidRequest, match="idempotency_key"):
        client.submit(REQUEST, idempotency_key=key)
    assert jobs_in_redis(client) == []


def test_a_batch_with_the_same_key_is_one_batch(client: Client) -> None:
    items = [REQUEST, {**REQUEST, "messages": [{"role": "user", "content": "two"}]}]

    first = client.submit_batch(items, idempotency_key="nightly-2026-12-07")
    again = client.submit_batch(items, idempotency_key="nightly-2026-12-07")

    assert again == first
    assert client.batch_status(first).counts.total == 2
    assert len(jobs_in_redis(client)) == 2


def test_a_submit_whose_reply_is_lost_names_its_job_and_a_retry_finds_it(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The transaction runs in Redis, and then the connection dies before the reply.
    write_once = client.store.idempotency.write_once

    def lost_reply(*args: Any, **kwargs: Any) -> Any:
        write_once(*args, **kwargs)
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(client.store.idempotency, "write_once", lost_reply)
    with pytest.raises(StoreUnavailable) as caught:
        client.submit(REQUEST, idempotency_key="retry-me")
    monkeypatch.undo()

    error = caught.value
    assert error.job_id is not None
    assert error.may_have_been_written is True
    assert client.submit(REQUEST, idempotency_key="retry-me") == error.job_id
    assert jobs_in_redis(client) == [f"llmd-idem:job:{error.job_id}"]


def test_a_submit_that_never_reached_redis_leaves_the_key_free(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    monkeypatch.setattr(client.store.idempotency, "write_once", refused)
    with pytest.raises(StoreUnavailable) as caught:
        client.submit(REQUEST, idempotency_key="fresh")
    monkeypatch.undo()

    retried = client.submit(REQUEST, idempotency_key="fresh")
    assert retried != caught.value.job_id, "nothing was written: the retry makes the job"
    assert jobs_in_redis(client) == [f"llmd-idem:job:{retried}"]
