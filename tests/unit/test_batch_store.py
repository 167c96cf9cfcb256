"""The batch store, against fakeredis and a private redis-server: counts follow every transition.

A batch's counts are moved by the job transitions themselves (claim, reschedule,
finish), so these tests drive items through the job store and check the batch
after each step, with a settable clock.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from dispatcher.errors import BatchNotFound, VendorAuthError
from dispatcher.models import BatchCounts, JobEventKind, JobStatus
from dispatcher.state.batches import NewItem, Replacement
from dispatcher.state.store import JobStore
from tests.unit.test_store import (
    JOB_TTL_S,
    PREFIX,
    START_S,
    Clock,
    MakeRequest,
    make_response,
    make_route,
    retry_event,
    text,
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(fake_or_real_redis: redis.Redis, clock: Clock) -> JobStore:
    return JobStore(fake_or_real_redis, PREFIX, job_ttl_s=JOB_TTL_S, now=clock)


def new_batch(store: JobStore, make_request: MakeRequest, size: int = 3) -> tuple[str, list[str]]:
    """A batch of `size` items on openai, one message holding them all; (batch id, job ids)."""
    batch_id = store.batches.new_batch_id()
    items = [
        NewItem(store.new_job_id(), f"row-{i}", make_request(user=f"u{i}"), make_route("openai"))
        for i in range(size)
    ]
    job_ids = [item.job_id for item in items]
    store.batches.create(
        batch_id, items, messages={("openai", 0): job_ids}, metadata={"team": "data"}
    )
    return batch_id, job_ids


def counts(store: JobStore, batch_id: str) -> tuple[int, int, int, int, int, int]:
    c = store.batches.get(batch_id).counts
    return (c.total, c.queued, c.running, c.succeeded, c.failed, c.cancelled)


def test_a_new_batch_holds_its_items_queued_in_input_order(
    store: JobStore, make_request: MakeRequest
) -> None:
    batch_id, job_ids = new_batch(store, make_request)

    record = store.batches.get(batch_id)
    assert record.counts == BatchCounts(total=3, queued=3)
    assert record.created_at.timestamp() == START_S
    assert (record.started_at, record.finished_at, record.eta_s) == (None, None, None)
    assert record.metadata == {"team": "data"}
    assert store.batches.job_ids(batch_id) == job_ids
    items = list(store.batches.items(batch_id))
    assert [(i.index, i.custom_id, i.job_id, i.status) for i in items] == [
        (n, f"row-{n}", job_ids[n], JobStatus.QUEUED) for n in range(3)
    ]
    job = store.get(job_ids[1])
    assert (job.batch_id, job.status, job.request.user) == (batch_id, JobStatus.QUEUED, "u1")
    assert [e.kind for e in job.events] == [JobEventKind.QUEUED]
    assert store.batches.message_items(batch_id, "openai", 0) == job_ids
    assert store.batches.message_items(batch_id, "openai", 1) == []


def test_counts_follow_claim_reschedule_and_finish_and_the_batch_ends_with_its_last_item(
    store: JobStore, make_request: MakeRequest, clock: Clock
) -> None:
    batch_id, (a, b, c) = new_batch(store, make_request)

    clock.advance(1.0)
    assert store.claim(a, 0, "openai", batch_id=batch_id).verdict == "ok"
    assert store.claim(b, 0, "openai", batch_id=batch_id).verdict == "ok"
    assert counts(store, batch_id) == (3, 1, 2, 0, 0, 0)
    assert store.batches.get(batch_id).started_at.timestamp() == START_S + 1.0  # type: ignore[union-attr]
    # A redelivered message for a running job does not count it twice.
    assert store.claim(a, 0, "openai", batch_id=batch_id).verdict == "ok"
    assert counts(store, batch_id) == (3, 1, 2, 0, 0, 0)

    store.reschedule(
        b,
        from_attempt=0,
        to_attempt=1,
        event=retry_event(clock, 1),
        running_on="openai",
        batch_id=batch_id,
    )
    assert counts(store, batch_id) == (3, 2, 1, 0, 0, 0)

    clock.advance(1.0)
    response = make_response(prompt_tokens=10, completion_tokens=20, cost_usd=0.25)
    assert store.finish(
        a, JobStatus.SUCCEEDED, vendor="openai", response=response, batch_id=batch_id
    )
    # Ending twice (a redelivered job) changes nothing.
    assert not store.finish(
        a, JobStatus.SUCCEEDED, vendor="openai", response=response, batch_id=batch_id
    )
    record = store.batches.get(batch_id)
    assert counts(store, batch_id) == (3, 2, 0, 1, 0, 0)
    assert (record.prompt_tokens, record.completion_tokens, record.cost_usd) == (10, 20, 0.25)
    # One of three ended 1 s after the start: two more take about 2 s.
    assert record.eta_s == pytest.approx(2.0)
    assert not store.batches.wait_until_finished(batch_id, 0)

    error = VendorAuthError("bad key", vendor="openai", status_code=401)
    store.finish(b, JobStatus.FAILED, vendor="openai", error=error, batch_id=batch_id)
    store.cancel(c)  # reads the job's batch from its record
    record = store.batches.get(batch_id)
    assert counts(store, batch_id) == (3, 0, 0, 1, 1, 1)
    assert record.done
    assert record.eta_s == 0.0
    assert record.finished_at is not None
    assert record.finished_at.timestamp() == START_S + 2.0
    assert store.batches.wait_until_finished(batch_id, 5.0)
    for key in store.keys.batch_keys(batch_id):
        assert 0 < store.redis.ttl(key) <= JOB_TTL_S, key
    items = list(store.batches.items(batch_id))
    assert [i.status for i in items] == [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]
    assert items[0].response == response
    assert items[0].attempts == 2  # claimed twice: the redelivery above counts as a call
    assert items[1].error is not None
    assert items[1].error.kind == "auth"
    assert items[2].error is not None
    assert items[2].error.kind == "cancelled"


def test_replacing_failed_items_reopens_the_batch_and_skips_places_already_retaken(
    store: JobStore, make_request: MakeRequest
) -> None:
    batch_id, (a, b, c) = new_batch(store, make_request)
    store.finish(
        a, JobStatus.SUCCEEDED, vendor="openai", response=make_response(), batch_id=batch_id
    )
    error = VendorAuthError("bad key", vendor="openai", status_code=401)
    for job_id in (b, c):
        store.finish(job_id, JobStatus.FAILED, vendor="openai", error=error, batch_id=batch_id)
    assert store.batches.get(batch_id).done
    failed = store.batches.failed(batch_id)
    assert [(index, job_id) for index, job_id, _ in failed] == [(1, b), (2, c)]
    assert failed[0][2].user == "u1"

    fresh_b, fresh_c = store.new_job_id(), store.new_job_id()
    written = store.batches.replace(
        batch_id,
        [
            Replacement(1, b, fresh_b, failed[0][2], make_route("openai")),
            # Place 2 does not hold this job: another retry took it already.
            Replacement(2, a, fresh_c, failed[1][2], make_route("openai")),
        ],
    )

    assert written == [fresh_b]
    record = store.batches.get(batch_id)
    assert counts(store, batch_id) == (3, 1, 0, 1, 1, 0)
    assert record.finished_at is None
    assert not store.batches.wait_until_finished(batch_id, 0)
    assert store.batches.job_ids(batch_id) == [a, fresh_b, c]
    assert store.get(fresh_b).batch_id == batch_id
    assert store.get(b).status is JobStatus.FAILED, "the failed job keeps its record"
    assert not store.redis.exists(store.keys.job(fresh_c))


def test_unfinished_lists_the_items_still_pending_with_whether_they_stream(
    store: JobStore, make_request: MakeRequest
) -> None:
    batch_id = store.batches.new_batch_id()
    items = [
        NewItem(store.new_job_id(), "plain", make_request(), make_route()),
        NewItem(store.new_job_id(), "streamed", make_request(stream=True), make_route()),
        NewItem(store.new_job_id(), "done", make_request(), make_route()),
    ]
    store.batches.create(batch_id, items, messages={})
    store.finish(
        items[2].job_id,
        JobStatus.SUCCEEDED,
        vendor="openai",
        response=make_response(),
        batch_id=batch_id,
    )

    assert list(store.batches.unfinished(batch_id)) == [
        (items[0].job_id, False),
        (items[1].job_id, True),
    ]


def test_an_expired_item_reads_back_as_an_expired_error(
    store: JobStore, make_request: MakeRequest
) -> None:
    batch_id, (a, _, _) = new_batch(store, make_request)
    store.redis.delete(store.keys.job(a))

    first = next(iter(store.batches.items(batch_id)))

    assert first.status is None
    assert first.error is not None
    assert first.error.kind == "expired"


def test_an_unknown_or_malformed_batch_id_is_not_found_and_addresses_no_key(
    store: JobStore,
) -> None:
    with pytest.raises(BatchNotFound, match="no batch"):
        store.batches.get("0" * 32)
    for hostile in ["../stats", "x" * 32, "*", f"{'a' * 32}:jobs"]:
        with pytest.raises(BatchNotFound, match="not a batch id"):
            store.batches.get(hostile)
    assert store.redis.dbsize() == 0


def test_a_batch_needs_items(store: JobStore) -> None:
    with pytest.raises(ValueError, match="at least one item"):
        store.batches.create(store.batches.new_batch_id(), [], messages={})
    assert store.redis.dbsize() == 0


def test_batch_keys_share_the_prefix(store: JobStore, make_request: MakeRequest) -> None:
    batch_id, _ = new_batch(store, make_request, size=1)
    keys = {text(key) for key in store.redis.keys("*")}
    assert all(key.startswith(f"{PREFIX}:") for key in keys)
    assert set(store.keys.batch_keys(batch_id)) - {store.keys.batch_done(batch_id)} <= keys


def test_cancelling_a_batch_with_pending_items_marks_it_once(
    store: JobStore, make_request: MakeRequest, clock: Clock
) -> None:
    batch_id, (a, _, _) = new_batch(store, make_request)
    store.finish(
        a, JobStatus.SUCCEEDED, vendor="openai", response=make_response(), batch_id=batch_id
    )

    clock.advance(1.0)
    assert store.batches.mark_cancelled(batch_id)
    clock.advance(1.0)
    assert store.batches.mark_cancelled(batch_id), "still pending: a second cancel goes on"

    cancelled_at = store.batches.get(batch_id).cancelled_at
    assert cancelled_at is not None
    assert cancelled_at.timestamp() == START_S + 1.0, "the first cancel's time is kept"


def test_cancelling_an_ended_batch_writes_nothing(
    store: JobStore, make_request: MakeRequest, clock: Clock
) -> None:
    batch_id, (a, b) = new_batch(store, make_request, size=2)
    store.finish(
        a, JobStatus.SUCCEEDED, vendor="openai", response=make_response(), batch_id=batch_id
    )
    error = VendorAuthError("bad key", vendor="openai", status_code=401)
    store.finish(b, JobStatus.FAILED, vendor="openai", error=error, batch_id=batch_id)
    key = store.keys.batch(batch_id)
    before = store.redis.hgetall(key)

    clock.advance(5.0)
    assert not store.batches.mark_cancelled(batch_id)

    assert store.redis.hgetall(key) == before
    record = store.batches.get(batch_id)
    assert record.cancelled_at is None
    assert counts(store, batch_id) == (2, 0, 0, 1, 1, 0)


def test_cancelling_an_unknown_batch_is_not_found_and_writes_nothing(store: JobStore) -> None:
    with pytest.raises(BatchNotFound, match="no batch"):
        store.batches.mark_cancelled("0" * 32)
    assert store.redis.dbsize() == 0


def test_a_big_batch_is_written_in_many_transactions_and_exists_only_once_whole(
    store: JobStore, make_request: MakeRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dispatcher.state.batches.ITEMS_PER_TRANSACTION", 4)
    executed: list[int] = []
    pipeline = store.redis.pipeline

    def counting(transaction: bool = True) -> Any:
        pipe = pipeline(transaction=transaction)
        execute = pipe.execute

        def counted(*args: Any, **kwargs: Any) -> Any:
            executed.append(len(pipe.command_stack))
            return execute(*args, **kwargs)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe

    monkeypatch.setattr(store.redis, "pipeline", counting)
    batch_id = store.batches.new_batch_id()
    items = [
        NewItem(store.new_job_id(), f"row-{i}", make_request(), make_route("openai"))
        for i in range(10)
    ]
    seen_mid_write: list[bool] = []

    def first_messages(pipe: object) -> None:
        # The last transaction is being built: every item is written, the batch is not.
        with pytest.raises(BatchNotFound, match="has not finished"):
            store.batches.get(batch_id)
        seen_mid_write.append(True)

    store.batches.create(
        batch_id, items, messages={("openai", 0): [i.job_id for i in items]}, also=first_messages
    )

    assert seen_mid_write == [True]
    assert len(executed) == 4, "3 transactions of at most 4 items, then the one that publishes"
    assert store.batches.get(batch_id).counts.total == 10
    assert store.batches.job_ids(batch_id) == [i.job_id for i in items]


def test_a_batch_whose_last_transaction_fails_does_not_exist(
    store: JobStore, make_request: MakeRequest
) -> None:
    batch_id = store.batches.new_batch_id()
    items = [NewItem(store.new_job_id(), "r", make_request(), make_route("openai"))]

    def redis_goes_away(pipe: object) -> None:
        raise redis.ConnectionError("Redis went away before the batch was published")

    with pytest.raises(redis.ConnectionError):
        store.batches.create(
            batch_id, items, messages={("openai", 0): [items[0].job_id]}, also=redis_goes_away
        )

    with pytest.raises(BatchNotFound):
        store.batches.get(batch_id)
    assert store.waiting.overdue(0, 100) == [], "no message names its items: no worker sees them"
