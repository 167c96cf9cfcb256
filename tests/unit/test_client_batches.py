"""The producer's batch calls on fakeredis with a fake sender: plan, window, all or nothing."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from dispatcher import (
    BatchRecord,
    JobStatus,
    Response,
    Settings,
    StoreUnavailable,
    VendorAuthError,
)
from dispatcher.broker.messages import BATCH_MESSAGE_ITEMS, RunJobs
from producer import AsyncClient, Client
from producer.batch_files import BatchFileError

PREFIX = "llmd"


class BatchRecorder:
    """A `send_jobs` that records every batch message and its queue; may fail after `fail_after`."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.sent: list[tuple[RunJobs, str]] = []
        self.fail_after = fail_after

    def __call__(self, message: RunJobs, queue: str) -> None:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise ConnectionError("broker down")
        self.sent.append((message, queue))


@pytest.fixture
def settings() -> Settings:
    return Settings.load(
        openai_api_key="sk-test-0123456789", anthropic_api_key="sk-ant-01234567", batch_window=3
    )


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def batches_sent() -> BatchRecorder:
    return BatchRecorder()


@pytest.fixture
def client(
    settings: Settings, fake_redis: fakeredis.FakeRedis, batches_sent: BatchRecorder
) -> Client:
    return Client(
        settings,
        redis_client=fake_redis,
        send=lambda *_: None,
        send_jobs=batches_sent,
        rng=random.Random(0),
    )


def prompts(count: int, model: str = "gpt-4o-mini") -> list[dict[str, Any]]:
    return [
        {"model": model, "messages": [{"role": "user", "content": f"p{i}"}]} for i in range(count)
    ]


def test_a_batch_goes_out_in_a_window_of_messages_per_vendor_that_covers_every_item(
    client: Client, batches_sent: BatchRecorder
) -> None:
    requests = prompts(400) + prompts(60, model="claude-3-5-haiku")

    batch_id = client.submit_batch(requests)

    record = client.batch_status(batch_id)
    assert (record.counts.total, record.counts.queued) == (460, 460)
    sent = batches_sent.sent
    # openai: 400 items = 8 messages, 3 out at once; anthropic: 60 items = 2 messages.
    assert [(m.vendor, queue, m.next_message, m.window) for m, queue in sent] == [
        ("openai", "llm.openai.batch", 3, 3),
        ("openai", "llm.openai.batch", 4, 3),
        ("openai", "llm.openai.batch", 5, 3),
        ("anthropic", "llm.anthropic.batch", 3, 3),
        ("anthropic", "llm.anthropic.batch", 4, 3),
    ]
    assert all(len(m.job_ids) <= BATCH_MESSAGE_ITEMS for m, _ in sent)
    # Following each first message's successors reaches every item exactly once, in order.
    store = client.store.batches
    reached: list[str] = []
    for vendor in ("openai", "anthropic"):
        numbers = sorted(
            n
            for first, _ in sent
            if first.vendor == vendor
            for n in range(first.next_message - first.window, 100, first.window)
        )
        for number in numbers:
            reached += store.message_items(batch_id, vendor, number)
    assert sorted(reached) == sorted(client.store.batches.job_ids(batch_id))
    assert len(reached) == len(set(reached)) == 460
    results = client.batch_results(batch_id)
    assert [item.custom_id for item in results] == [f"request-{n}" for n in range(1, 461)]
    assert client.get(results[0].job_id).request.messages[0].content == "p0"
    last_route = client.get(results[-1].job_id).route
    assert last_route is not None
    assert (last_route.vendor, last_route.queue) == ("anthropic", "llm.anthropic.batch")


def test_one_item_no_vendor_can_take_refuses_the_whole_batch_and_writes_nothing(
    client: Client, fake_redis: fakeredis.FakeRedis, batches_sent: BatchRecorder
) -> None:
    requests = [*prompts(5), *prompts(1, model="no-such-model"), *prompts(5)]

    with pytest.raises(BatchFileError) as refused:
        client.submit_batch(requests)

    assert [number for number, _ in refused.value.problems] == [6]
    assert "item 6" in str(refused.value)
    assert fake_redis.dbsize() == 0
    assert batches_sent.sent == []


def test_a_bad_line_in_a_file_refuses_the_file_and_writes_nothing(
    client: Client, fake_redis: fakeredis.FakeRedis, tmp_path: Path
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a"}]}\n{oops\n'
    )

    with pytest.raises(BatchFileError, match="line 2"):
        client.submit_batch(path)
    assert fake_redis.dbsize() == 0


def test_items_whose_message_could_not_be_sent_fail_so_the_batch_still_ends(
    settings: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    broken = BatchRecorder(fail_after=1)
    client = Client(settings, redis_client=fake_redis, send=lambda *_: None, send_jobs=broken)
    with pytest.raises(ConnectionError, match="broker down"):
        client.submit_batch(prompts(4 * BATCH_MESSAGE_ITEMS))

    (batch_id,) = {m.batch for m, _ in broken.sent}
    record = client.batch_status(batch_id)
    # Message 0 went out (its successor, message 3, would follow); messages 1 and 2 did not.
    assert record.counts.failed == 2 * BATCH_MESSAGE_ITEMS
    assert record.counts.queued == 2 * BATCH_MESSAGE_ITEMS
    failed = [item for item in client.batch_results(batch_id) if item.status is JobStatus.FAILED]
    assert failed[0].error is not None
    assert "could not queue" in failed[0].error.message
    assert {item.index // BATCH_MESSAGE_ITEMS for item in failed} == {1, 2}


def test_a_redis_outage_during_a_batch_submit_names_the_batch_it_may_have_left(
    settings: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    sent: list[RunJobs] = []

    def broken(message: RunJobs, queue: str) -> None:
        if sent:
            raise redis.ConnectionError("Connection refused")
        sent.append(message)

    client = Client(settings, redis_client=fake_redis, send=lambda *_: None, send_jobs=broken)
    with pytest.raises(StoreUnavailable, match="may have been written") as caught:
        client.submit_batch(prompts(4 * BATCH_MESSAGE_ITEMS))
    batch_id = sent[0].batch
    assert f"batch_status('{batch_id}')" in str(caught.value)
    assert client.batch_status(batch_id).counts.total == 4 * BATCH_MESSAGE_ITEMS


def test_retry_failed_resubmits_only_failed_items_in_their_places(
    client: Client, batches_sent: BatchRecorder
) -> None:
    batch_id = client.submit_batch(prompts(6))
    store = client.store
    job_ids = store.batches.job_ids(batch_id)
    reply = Response(content="ok", model="gpt-4o-mini", vendor="openai")
    for index, job_id in enumerate(job_ids):
        if index in (1, 4):
            error = VendorAuthError("bad key", vendor="openai", status_code=401)
            store.finish(job_id, JobStatus.FAILED, vendor="openai", error=error, batch_id=batch_id)
        else:
            store.finish(
                job_id, JobStatus.SUCCEEDED, vendor="openai", response=reply, batch_id=batch_id
            )
    assert client.wait_batch(batch_id, timeout_s=1).counts.failed == 2
    batches_sent.sent.clear()

    assert client.retry_failed(batch_id) == 2

    (message, queue), *rest = batches_sent.sent
    assert rest == []
    assert (queue, message.next_message) == ("llm.openai.batch", -1)
    now = store.batches.job_ids(batch_id)
    assert set(message.job_ids) == {now[1], now[4]}
    assert [now[i] == job_ids[i] for i in range(6)] == [True, False, True, True, False, True]
    assert client.batch_status(batch_id).counts.queued == 2
    assert client.retry_failed(batch_id) == 0, "nothing failed any more"


def test_wait_batch_reports_progress_and_wakes_when_the_last_item_ends(client: Client) -> None:
    batch_id = client.submit_batch(prompts(3))
    store = client.store
    reply = Response(content="ok", model="gpt-4o-mini", vendor="openai")
    job_ids = store.batches.job_ids(batch_id)
    seen: list[int] = []

    def end_all() -> None:
        for job_id in job_ids:
            store.finish(
                job_id, JobStatus.SUCCEEDED, vendor="openai", response=reply, batch_id=batch_id
            )

    timer = threading.Timer(0.3, end_all)
    timer.start()
    try:
        record = client.wait_batch(
            batch_id,
            timeout_s=10,
            on_progress=lambda r: seen.append(r.counts.ended),
            interval_s=0.1,
        )
    finally:
        timer.cancel()
    assert record.done
    assert seen[0] == 0
    assert seen[-1] == 3


def test_wait_batch_times_out_naming_what_is_pending(client: Client) -> None:
    batch_id = client.submit_batch(prompts(2))
    with pytest.raises(TimeoutError, match="2 of 2 items pending"):
        client.wait_batch(batch_id, timeout_s=0.2, interval_s=0.1)


async def test_the_async_client_submits_follows_and_reads_a_batch(settings: Settings) -> None:
    server = fakeredis.FakeServer()
    sync_redis = fakeredis.FakeRedis(server=server)
    async_redis = fakeredis.FakeAsyncRedis(server=server)
    client = AsyncClient(
        settings, redis_client=async_redis, sync_redis_client=sync_redis, send=lambda *_: None
    )
    batch_id = await client.submit_batch(prompts(4))
    assert (await client.batch_status(batch_id)).counts.queued == 4
    with pytest.raises(TimeoutError, match=f"batch {batch_id} has 4 of 4 items pending"):
        await client.wait_batch(batch_id, timeout_s=0.05, interval_s=0.01)

    store = client.sync.store
    reply = Response(content="ok", model="gpt-4o-mini", vendor="openai")

    def finish_all() -> None:
        for job_id in store.batches.job_ids(batch_id):
            store.finish(
                job_id, JobStatus.SUCCEEDED, vendor="openai", response=reply, batch_id=batch_id
            )

    seen: list[int] = []

    async def progress(record: BatchRecord) -> None:
        seen.append(record.counts.succeeded)

    finisher = threading.Thread(target=finish_all)
    finisher.start()
    record = await client.wait_batch(batch_id, timeout_s=5, on_progress=progress, interval_s=0.05)
    finisher.join(5)
    assert record.counts.succeeded == 4
    assert seen[-1] == 4
    results = await client.batch_results(batch_id)
    assert [item.custom_id for item in results] == [f"request-{n}" for n in range(1, 5)]
    assert await client.cancel_batch(batch_id) == 0
    assert await client.retry_failed(batch_id) == 0
    await client.aclose()
    await async_redis.aclose()


def test_cancel_batch_leaves_an_ended_batch_as_it_ended(
    settings: Settings, fake_or_real_redis: redis.Redis
) -> None:
    client = Client(
        settings, redis_client=fake_or_real_redis, send=lambda *_: None, send_jobs=BatchRecorder()
    )
    batch_id = client.submit_batch(prompts(2))
    reply = Response(content="ok", model="gpt-4o-mini", vendor="openai")
    for job_id in client.store.batches.job_ids(batch_id):
        client.store.finish(
            job_id, JobStatus.SUCCEEDED, vendor="openai", response=reply, batch_id=batch_id
        )
    ended = client.batch_status(batch_id)

    assert client.cancel_batch(batch_id) == 0

    after = client.batch_status(batch_id)
    assert after.cancelled_at is None
    assert after.counts == ended.counts
    assert after.finished_at == ended.finished_at
    assert [item.status for item in client.batch_results(batch_id)] == [JobStatus.SUCCEEDED] * 2


def test_cancel_batch_cancels_what_is_pending_and_nothing_more(
    settings: Settings, fake_or_real_redis: redis.Redis
) -> None:
    client = Client(
        settings, redis_client=fake_or_real_redis, send=lambda *_: None, send_jobs=BatchRecorder()
    )
    batch_id = client.submit_batch(prompts(3))
    first = client.store.batches.job_ids(batch_id)[0]
    reply = Response(content="ok", model="gpt-4o-mini", vendor="openai")
    client.store.finish(
        first, JobStatus.SUCCEEDED, vendor="openai", response=reply, batch_id=batch_id
    )

    assert client.cancel_batch(batch_id) == 2
    assert client.cancel_batch(batch_id) == 0, "a second cancel finds the batch ended"

    record = client.batch_status(batch_id)
    assert record.cancelled_at is not None
    assert (record.counts.succeeded, record.counts.cancelled, record.done) == (1, 2, True)


def test_also_write_lands_in_the_batchs_last_write_once_per_batch(
    client: Client, fake_redis: fakeredis.FakeRedis
) -> None:
    seen: list[str] = []

    def note(pipe: Any, batch_id: str) -> None:
        seen.append(batch_id)
        pipe.incr(f"made:{batch_id}")

    batch_id = client.submit_batch(prompts(3), idempotency_key="nightly", also_write=note)
    again = client.submit_batch(prompts(3), idempotency_key="nightly", also_write=note)
    assert again == batch_id
    assert seen == [batch_id]  # the second submit wrote nothing
    assert fake_redis.get(f"made:{batch_id}") == b"1"
    assert client.batch_status(batch_id).counts.total == 3
