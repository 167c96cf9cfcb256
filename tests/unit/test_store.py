"""The job store, against fakeredis and a private redis-server: every transition and figure.

Each test runs twice: on fakeredis (Lua through lupa) and, marked `integration`,
on the session's private redis-server. Time comes from a settable clock, so no
test sleeps to make time pass; the only real waits are the bounded ones of
`wait_until_ended`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from dispatcher.errors import (
    DispatcherError,
    JobNotFound,
    NoRoute,
    StreamBroken,
    VendorAuthError,
    VendorRateLimited,
    VendorUnavailable,
    error_from_dict,
)
from dispatcher.models import (
    JobEvent,
    JobEventKind,
    JobRecord,
    JobStatus,
    Request,
    Response,
    Route,
    Stats,
    Usage,
)
from dispatcher.state.stats import QUEUE_WAIT, bucket_of, percentile
from dispatcher.state.store import PENDING_TTL_S, JobStore, valid_job_id
from dispatcher.state.traffic import Load

PREFIX = "llmd-test"
# Far below the pending TTL, so an ended job's TTL is told apart from a pending one's.
JOB_TTL_S = 3_600
# A round epoch second: every step the tests take (0.25 s, 0.5 s) stays exact in binary.
START_S = 1_700_000_000.0
# Long enough that a waiter which should return at once would visibly hang instead.
LONG_WAIT_S = 30.0
WAITERS = 4

MakeRequest = Callable[..., Request]


class Clock:
    """A clock for `JobStore(now=...)` that moves only when a test moves it."""

    def __init__(self, start_s: float = START_S) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now_s += seconds


class UnreachableRedis:
    """Stands in for the client where no command may be sent: any use fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store used Redis ({name}) where it must not")


@pytest.fixture
def clock() -> Clock:
    """The store's clock, at `START_S`."""
    return Clock()


@pytest.fixture
def store(fake_or_real_redis: redis.Redis, clock: Clock) -> JobStore:
    """A job store on an empty database, with `JOB_TTL_S` and the test's clock."""
    return JobStore(fake_or_real_redis, PREFIX, job_ttl_s=JOB_TTL_S, now=clock)


# --- helpers -----------------------------------------------------------------------


def at(epoch_s: float) -> datetime:
    """The UTC datetime of an epoch second, as the store writes it."""
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def make_route(vendor: str = "openai", *fallbacks: str) -> Route:
    """A route to `vendor`'s queue."""
    return Route.model_validate(
        {
            "vendor": vendor,
            "model": "gpt-4o-mini",
            "queue": f"llm.{vendor}",
            "fallbacks": [{"vendor": v, "model": "claude-3-5-haiku"} for v in fallbacks],
            "reason": "test",
        }
    )


def make_response(
    vendor: str = "openai",
    *,
    latency_ms: float = 420.5,
    prompt_tokens: int = 12,
    completion_tokens: int = 30,
    cost_usd: float = 0.00042,
) -> Response:
    """A completed reply from `vendor`."""
    return Response(
        content="Hello!",
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
        model="gpt-4o-mini",
        vendor=vendor,
        latency_ms=latency_ms,
        cost_usd=cost_usd,
        created_at=at(START_S),
    )


def new_job(
    store: JobStore, make_request: MakeRequest, vendor: str = "openai", **request: Any
) -> str:
    """Create a queued job routed to `vendor` (request fields overridden); its id."""
    job_id = store.new_job_id()
    store.create(job_id, make_request(**request), make_route(vendor))
    return job_id


def keyspace(store: JobStore) -> set[str]:
    """Every key in the database."""
    return {text(key) for key in store.redis.keys("*")}


def text(value: Any) -> str:
    """A key, field or value as text, whichever form the client returned."""
    return value.decode() if isinstance(value, bytes) else str(value)


def hash_at(store: JobStore, key: str) -> dict[str, str]:
    """A hash as text."""
    return {text(f): text(v) for f, v in store.redis.hgetall(key).items()}


def figures(store: JobStore) -> dict[str, dict[str, str]]:
    """The raw statistics: the counters hash and every histogram."""
    histograms = [text(k) for k in store.redis.scan_iter(match=f"{PREFIX}:hist:*")]
    return {key: hash_at(store, key) for key in [store.keys.stats(), *histograms]}


def retry_event(clock: Clock, attempt: int, vendor: str = "openai") -> JobEvent:
    """The event a worker records when it retries on `vendor`."""
    return JobEvent(
        kind=JobEventKind.RETRY,
        at=at(clock()),
        attempt=attempt,
        vendor=vendor,
        reason="read timeout",
        delay_s=2.0,
    )


def wait_event(clock: Clock, attempt: int) -> JobEvent:
    """The event a worker records when a job waits for a cooling deployment."""
    return JobEvent(
        kind=JobEventKind.RETRY,
        at=at(clock()),
        attempt=attempt,
        vendor="openai",
        reason=f"waiting 1.00 s for gpt-4o-mini on openai to cool down (attempt {attempt})",
        delay_s=1.0,
    )


def retry_counters(vendor: str) -> list[tuple[str, float]]:
    """The counters a retry on `vendor` adds to."""
    return [("t:retries", 1.0), (f"v:{vendor}:retries", 1.0)]


# --- create and get ----------------------------------------------------------------


def test_created_job_reads_back_queued_with_its_request_route_times_and_batch(
    store: JobStore, make_request: MakeRequest
) -> None:
    job_id = store.new_job_id()
    request = make_request(timeout_s=90.0, metadata={"tenant": "acme"})
    route = make_route("openai", "anthropic")

    store.create(job_id, request, route, batch_id="batch-7")
    record = store.get(job_id)

    assert record.job_id == job_id
    assert record.request == request
    assert record.route == route
    assert record.status is JobStatus.QUEUED
    assert record.attempts == 0
    assert record.events == [JobEvent(kind=JobEventKind.QUEUED, at=at(START_S), vendor="openai")]
    assert record.created_at == at(START_S)
    assert record.deadline_at == at(START_S + 90.0)
    assert record.batch_id == "batch-7"
    assert record.started_at is None
    assert record.finished_at is None
    assert record.response is None
    assert record.error is None


def test_created_job_without_timeout_or_batch_has_no_deadline_or_batch_id(
    store: JobStore, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)

    record = store.get(job_id)

    assert record.deadline_at is None
    assert record.batch_id is None


def test_create_inside_a_callers_pipeline_is_invisible_until_execute(
    store: JobStore, make_request: MakeRequest
) -> None:
    job_id = store.new_job_id()
    pipe = store.redis.pipeline()

    store.create(job_id, make_request(), make_route(), pipeline=pipe)

    assert keyspace(store) == set()
    with pytest.raises(JobNotFound):
        store.get(job_id)
    pipe.execute()
    assert store.get(job_id).status is JobStatus.QUEUED
    assert keyspace(store) == {
        store.keys.job(job_id),
        store.keys.events(job_id),
        store.keys.waiting(),
    }


def test_new_job_ids_are_valid_job_ids() -> None:
    ids = {JobStore.new_job_id() for _ in range(20)}

    assert len(ids) == 20
    assert all(valid_job_id(job_id) for job_id in ids)


def test_get_of_an_unknown_job_id_raises_job_not_found_naming_it(store: JobStore) -> None:
    job_id = store.new_job_id()

    with pytest.raises(JobNotFound) as caught:
        store.get(job_id)

    assert caught.value.job_id == job_id
    assert keyspace(store) == set()


MALFORMED_IDS = [
    pytest.param("../x", id="path"),
    pytest.param("a:b", id="colon"),
    pytest.param("*", id="glob"),
    pytest.param("", id="empty"),
    pytest.param("0123456789ABCDEF0123456789ABCDEF", id="uppercase-hex"),
    pytest.param("0123456789abcdef0123456789abcde", id="31-digits"),
    pytest.param("0123456789abcdef0123456789abcdef0", id="33-digits"),
    pytest.param("0123456789abcdef0123456789abcdef:events", id="suffix"),
    pytest.param("0123456789abcdef0123456789abcdef\n", id="trailing-newline"),
]


@pytest.mark.parametrize("job_id", MALFORMED_IDS)
def test_valid_job_id_refuses_what_is_not_32_lowercase_hex_digits(job_id: str) -> None:
    assert not valid_job_id(job_id)


@pytest.mark.parametrize("job_id", MALFORMED_IDS)
def test_get_of_a_malformed_id_raises_job_not_found_without_sending_a_command(
    store: JobStore, monkeypatch: pytest.MonkeyPatch, job_id: str
) -> None:
    monkeypatch.setattr(store, "redis", UnreachableRedis())

    with pytest.raises(JobNotFound) as caught:
        store.get(job_id)

    assert caught.value.job_id is None


@pytest.mark.parametrize("job_id", MALFORMED_IDS)
def test_get_of_a_malformed_id_leaves_the_keyspace_unchanged(
    store: JobStore, make_request: MakeRequest, job_id: str
) -> None:
    new_job(store, make_request)
    before = keyspace(store)

    with pytest.raises(JobNotFound):
        store.get(job_id)

    assert keyspace(store) == before


# --- start -------------------------------------------------------------------------


def test_start_marks_the_job_running_counts_the_attempt_and_records_the_event(
    store: JobStore, clock: Clock, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    clock.advance(0.5)

    assert store.start(job_id, 0, "openai") == "ok"

    record = store.get(job_id)
    assert record.status is JobStatus.RUNNING
    assert record.attempts == 1
    assert record.started_at == at(START_S + 0.5)
    assert record.queue_wait_ms == 500.0
    assert record.events[-1] == JobEvent(
        kind=JobEventKind.STARTED, at=at(START_S + 0.5), attempt=0, vendor="openai"
    )


def test_second_start_leaves_queue_wait_and_its_counters_unchanged(
    store: JobStore, clock: Clock, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    clock.advance(0.25)
    assert store.start(job_id, 0, "openai") == "ok"
    first = store.get(job_id)
    counters_before = figures(store)
    clock.advance(5.0)

    assert store.start(job_id, 1, "openai") == "ok"

    second = store.get(job_id)
    assert second.attempts == 2
    assert second.queue_wait_ms == first.queue_wait_ms == 250.0
    assert second.started_at == first.started_at
    assert figures(store) == counters_before
    assert store.stats().average_queue_wait_ms == 250.0


@pytest.mark.parametrize(
    ("wait_s", "bucket"),
    [
        pytest.param(0.0, "0", id="no-wait"),
        pytest.param(0.5, "8", id="exactly-on-the-500ms-bound"),
        pytest.param(0.75, "9", id="between-500-and-1000ms"),
        pytest.param(700.0, "18", id="past-the-last-finite-bound"),
    ],
)
def test_queue_wait_lands_in_the_same_histogram_bucket_as_bucket_of(
    store: JobStore, clock: Clock, make_request: MakeRequest, wait_s: float, bucket: str
) -> None:
    job_id = new_job(store, make_request)
    clock.advance(wait_s)

    store.start(job_id, 0, "openai")

    assert hash_at(store, store.keys.histogram(QUEUE_WAIT)) == {bucket: "1"}
    assert bucket_of(wait_s * 1000) == bucket


def test_start_of_an_older_attempt_is_stale_and_changes_nothing(
    store: JobStore, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    store.start(job_id, 0, "openai")
    store.reschedule(
        job_id, from_attempt=0, to_attempt=1, event=JobEvent(kind=JobEventKind.RETRY, attempt=1)
    )
    before = store.get(job_id)

    assert store.start(job_id, 0, "openai") == "stale"

    assert store.get(job_id) == before
    assert before.status is JobStatus.QUEUED


def test_start_of_a_newer_attempt_adopts_the_job(
    store: JobStore, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    store.start(job_id, 0, "openai")

    # The next message arrived before the old worker rescheduled: it takes the job over.
    assert store.start(job_id, 2, "anthropic") == "ok"

    record = store.get(job_id)
    assert record.status is JobStatus.RUNNING
    assert record.attempts == 2
    assert (record.events[-1].attempt, record.events[-1].vendor) == (2, "anthropic")
    assert store.start(job_id, 1, "openai") == "stale"


def test_start_after_finish_is_terminal_and_changes_nothing(
    store: JobStore, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    store.start(job_id, 0, "openai")
    store.finish(job_id, JobStatus.SUCCEEDED, vendor="openai", response=make_response())
    before = (store.get(job_id), figures(store))

    assert store.start(job_id, 1, "openai") == "terminal"

    assert (store.get(job_id), figures(store)) == before


def test_start_of_an_absent_job_is_missing_and_creates_nothing(store: JobStore) -> None:
    assert store.start(store.new_job_id(), 0, "openai") == "missing"

    assert keyspace(store) == set()


def test_claim_returns_the_running_record_it_wrote(
    store: JobStore, clock: Clock, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    clock.advance(0.25)

    claim = store.claim(job_id, 0, "openai")

    assert claim.verdict == "ok"
    assert claim.blocked_until is None
    assert claim.record is not None
    stored = store.get(job_id)
    assert claim.record == stored.model_copy(update={"events": []})
    assert claim.record.status is JobStatus.RUNNING
    assert claim.record.queue_wait_ms == 250.0


def test_claim_for_a_blocked_deployment_is_blocked_with_its_time_and_writes_nothing(
    store: JobStore, clock: Clock, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    store.blocks.block("openai", "gpt-4o-mini", 30.0)
    before = (store.get(job_id), figures(store), keyspace(store))

    claim = store.claim(job_id, 0, "openai")

    assert claim.verdict == "blocked"
    assert claim.blocked_until == START_S + 30.0
    assert claim.record == before[0].model_copy(update={"events": []})
    assert (store.get(job_id), figures(store), keyspace(store)) == before
    # Another vendor is not held back by that block, and the block ends with its time.
    assert store.claim(job_id, 0, "anthropic").verdict == "ok"
    other = new_job(store, make_request)
    clock.advance(30.0)
    assert store.claim(other, 0, "openai").verdict == "ok"


def test_claim_past_the_deadline_is_late_and_writes_nothing(
    store: JobStore, clock: Clock, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request, timeout_s=5.0)
    clock.advance(4.75)
    assert store.claim(job_id, 0, "openai").verdict == "ok"
    store.reschedule(
        job_id, from_attempt=0, to_attempt=1, event=JobEvent(kind=JobEventKind.RETRY, attempt=1)
    )
    clock.advance(0.25)
    before = (store.get(job_id), figures(store))

    claim = store.claim(job_id, 1, "openai")

    assert claim.verdict == "late"
    assert claim.record is not None
    assert claim.record.deadline_at == at(START_S + 5.0)
    assert (store.get(job_id), figures(store)) == before


def test_claim_of_an_absent_job_is_missing_without_a_record(store: JobStore) -> None:
    claim = store.claim(store.new_job_id(), 0, "openai")

    assert (claim.verdict, claim.record, claim.blocked_until) == ("missing", None, None)
    assert keyspace(store) == set()


# --- reschedule --------------------------------------------------------------------


def test_reschedule_hands_the_job_to_the_next_attempt_with_event_and_counters(
    store: JobStore, clock: Clock, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    store.start(job_id, 0, "openai")
    event = retry_event(clock, attempt=1)

    result = store.reschedule(
        job_id, from_attempt=0, to_attempt=1, event=event, counters=retry_counters("openai")
    )

    assert result == "ok"
    record = store.get(job_id)
    assert record.status is JobStatus.QUEUED
    assert record.events[-1] == event
    stats = store.stats()
    assert (stats.retries, stats.vendor_stats["openai"].retries) == (1, 1)
    assert store.start(job_id, 0, "openai") == "stale"
    assert store.start(job_id, 1, "openai") == "ok"


def test_reschedule_after_a_newer_attempt_took_over_is_moved_but_still_recorded(
    store: JobStore, clock: Clock, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    store.start(job_id, 0, "openai")
    # The retry message was sent first and already started before the old worker wrote.
    store.start(job_id, 1, "openai")
    event = retry_event(clock, attempt=1)

    result = store.reschedule(
        job_id, from_attempt=0, to_attempt=1, event=event, counters=retry_counters("openai")
    )

    assert result == "moved"
    record = store.get(job_id)
    assert record.status is JobStatus.RUNNING
    assert record.events[-1] == event
    assert store.stats().retries == 1
    assert store.start(job_id, 0, "openai") == "stale"


def test_a_wait_taken_up_again_for_the_same_deployment_is_recorded_once(
    store: JobStore, clock: Clock, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    first, again = wait_event(clock, attempt=1), wait_event(clock, attempt=2)

    store.reschedule(job_id, from_attempt=0, to_attempt=1, event=first, waiting_for="deployment:0")
    result = store.reschedule(
        job_id, from_attempt=1, to_attempt=2, event=again, waiting_for="deployment:0"
    )

    assert result == "ok"
    record = store.get(job_id)
    assert [e.kind for e in record.events] == [JobEventKind.QUEUED, JobEventKind.RETRY]
    assert record.events[-1] == first
    # The second wait still handed the job over: only attempt 2 may run it.
    assert (record.status, record.attempt) == (JobStatus.QUEUED, 2)
    assert store.start(job_id, 1, "openai") == "stale"


def test_a_wait_for_another_deployment_or_after_a_start_is_a_new_entry(
    store: JobStore, clock: Clock, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request, "openai")
    events = [wait_event(clock, attempt=n) for n in (1, 2, 4)]
    store.reschedule(
        job_id, from_attempt=0, to_attempt=1, event=events[0], waiting_for="deployment:0"
    )
    store.reschedule(
        job_id, from_attempt=1, to_attempt=2, event=events[1], waiting_for="deployment:1"
    )
    assert store.start(job_id, 2, "openai") == "ok"  # the wait is over
    store.reschedule(
        job_id, from_attempt=2, to_attempt=3, event=retry_event(clock, attempt=3), counters=[]
    )
    store.reschedule(
        job_id, from_attempt=3, to_attempt=4, event=events[2], waiting_for="deployment:1"
    )

    kinds = [e.kind for e in store.get(job_id).events]
    assert kinds == [
        JobEventKind.QUEUED,
        JobEventKind.RETRY,  # waits for deployment 0
        JobEventKind.RETRY,  # then for deployment 1
        JobEventKind.STARTED,
        JobEventKind.RETRY,  # a retry: no wait
        JobEventKind.RETRY,  # deployment 1 again, a wait of its own
    ]


def test_reschedule_overtaken_by_a_message_newer_than_its_next_is_stale_and_records_nothing(
    store: JobStore, clock: Clock, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    store.start(job_id, 0, "openai")
    store.start(job_id, 2, "anthropic")
    before = (store.get(job_id), figures(store))

    result = store.reschedule(
        job_id,
        from_attempt=0,
        to_attempt=1,
        event=retry_event(clock, attempt=1),
        counters=retry_counters("openai"),
    )

    assert result == "stale"
    assert (store.get(job_id), figures(store)) == before


def test_reschedule_after_finish_is_terminal_and_records_nothing(
    store: JobStore, clock: Clock, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    store.start(job_id, 0, "openai")
    store.finish(job_id, JobStatus.SUCCEEDED, vendor="openai", response=make_response())
    before = (store.get(job_id), figures(store))

    result = store.reschedule(
        job_id,
        from_attempt=0,
        to_attempt=1,
        event=retry_event(clock, attempt=1),
        counters=retry_counters("openai"),
    )

    assert result == "terminal"
    assert (store.get(job_id), figures(store)) == before


def test_reschedule_of_an_absent_job_is_missing_and_creates_nothing(
    store: JobStore, clock: Clock
) -> None:
    result = store.reschedule(
        store.new_job_id(),
        from_attempt=0,
        to_attempt=1,
        event=retry_event(clock, attempt=1),
        counters=retry_counters("openai"),
    )

    assert result == "missing"
    assert keyspace(store) == set()


# --- finish ------------------------------------------------------------------------


def test_first_finish_ends_the_job_with_response_usage_latency_cost_and_event(
    store: JobStore, clock: Clock, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    store.start(job_id, 0, "openai")
    clock.advance(2.0)
    response = make_response(latency_ms=1234.5, cost_usd=0.0042)

    ended = store.finish(
        job_id, JobStatus.SUCCEEDED, vendor="openai", response=response, total_ms=2000.25
    )

    assert ended is True
    record = store.get(job_id)
    assert record.status is JobStatus.SUCCEEDED
    assert record.response == response
    assert record.usage == response.usage
    assert record.vendor_latency_ms == 1234.5
    assert record.cost_usd == 0.0042
    assert record.total_ms == 2000.25
    assert record.finished_at == at(START_S + 2.0)
    assert record.error is None
    assert record.events[-1] == JobEvent(
        kind=JobEventKind.SUCCEEDED, at=at(START_S + 2.0), vendor="openai"
    )


def test_finish_adds_the_latency_to_the_vendor_and_overall_histograms(
    store: JobStore, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    store.start(job_id, 0, "openai")

    store.finish(
        job_id, JobStatus.SUCCEEDED, vendor="openai", response=make_response(latency_ms=250.0)
    )

    expected = {bucket_of(250.0): "1"}
    assert hash_at(store, store.keys.histogram("latency")) == expected
    assert hash_at(store, store.keys.histogram("latency", "openai")) == expected


def test_second_finish_returns_false_and_changes_neither_record_nor_stats(
    store: JobStore, clock: Clock, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    store.start(job_id, 0, "openai")
    store.finish(job_id, JobStatus.SUCCEEDED, vendor="openai", response=make_response())
    before = (store.get(job_id), figures(store), store.stats())
    clock.advance(10.0)

    # A redelivered message ran the job again and reports a different outcome.
    ended = store.finish(
        job_id,
        JobStatus.FAILED,
        vendor="anthropic",
        response=make_response("anthropic", latency_ms=99.0, cost_usd=1.0),
        error=VendorUnavailable("overloaded", vendor="anthropic", status_code=529),
        total_ms=10_000.0,
    )

    assert ended is False
    assert (store.get(job_id), figures(store), store.stats()) == before


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(
            VendorRateLimited("slow down", retry_after_s=12.0, vendor="openai", status_code=429),
            id="rate-limited",
        ),
        pytest.param(VendorAuthError("bad key", vendor="openai", status_code=401), id="auth"),
        pytest.param(StreamBroken("cut off", partial=True, vendor="openai"), id="stream-broken"),
        pytest.param(NoRoute("nobody serves it", reasons={"openai": "disabled"}), id="no-route"),
    ],
)
def test_finish_with_an_error_stores_the_typed_error_that_error_from_dict_rebuilds(
    store: JobStore, make_request: MakeRequest, error: DispatcherError
) -> None:
    job_id = new_job(store, make_request)
    store.start(job_id, 0, "openai")

    assert store.finish(job_id, JobStatus.FAILED, vendor="openai", error=error) is True

    stored = store.get(job_id).error
    assert stored is not None
    assert (stored.kind, stored.message, stored.retryable) == (
        error.kind,
        error.message,
        error.retryable,
    )
    assert (stored.vendor, stored.status_code, stored.job_id) == (
        error.vendor,
        error.status_code,
        job_id,
    )
    rebuilt = error_from_dict(stored.model_dump())
    assert type(rebuilt) is type(error)
    assert rebuilt.to_dict() == {**error.to_dict(), "job_id": job_id}
    assert store.get(job_id).events[-1].reason == error.message


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING])
def test_finish_refuses_a_non_terminal_status(
    store: JobStore, make_request: MakeRequest, status: JobStatus
) -> None:
    job_id = new_job(store, make_request)
    before = (store.get(job_id), keyspace(store))

    with pytest.raises(ValueError, match="terminal"):
        store.finish(job_id, status, vendor="openai")

    assert (store.get(job_id), keyspace(store)) == before


def test_pending_job_keeps_the_long_ttl_and_an_ended_one_gets_the_job_ttl(
    store: JobStore, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    store.start(job_id, 0, "openai")
    pending = [store.keys.job(job_id), store.keys.events(job_id)]

    for key in pending:
        assert JOB_TTL_S < store.redis.ttl(key) <= PENDING_TTL_S
    assert store.redis.exists(store.keys.done(job_id)) == 0

    store.finish(job_id, JobStatus.SUCCEEDED, vendor="openai", response=make_response())

    for key in [*pending, store.keys.done(job_id)]:
        assert 0 < store.redis.ttl(key) <= JOB_TTL_S


# --- cancel ------------------------------------------------------------------------


def test_cancel_of_a_queued_job_ends_it_and_a_later_start_is_terminal(
    store: JobStore, clock: Clock, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    clock.advance(1.0)

    assert store.cancel(job_id) is True

    record = store.get(job_id)
    assert record.status is JobStatus.CANCELLED
    assert record.finished_at == at(START_S + 1.0)
    assert record.events[-1] == JobEvent(
        kind=JobEventKind.CANCELLED, at=at(START_S + 1.0), reason="cancelled"
    )
    assert store.start(job_id, 0, "openai") == "terminal"
    stats = store.stats()
    assert (stats.cancelled_requests, stats.total_requests) == (1, 0)


def test_cancel_of_a_running_job_makes_the_workers_finish_return_false(
    store: JobStore, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    store.start(job_id, 0, "openai")

    assert store.cancel(job_id) is True

    finished = store.finish(job_id, JobStatus.SUCCEEDED, vendor="openai", response=make_response())
    assert finished is False
    record = store.get(job_id)
    assert (record.status, record.response) == (JobStatus.CANCELLED, None)


def test_cancel_of_an_ended_job_returns_false_and_changes_nothing(
    store: JobStore, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    store.start(job_id, 0, "openai")
    store.finish(job_id, JobStatus.SUCCEEDED, vendor="openai", response=make_response())
    before = (store.get(job_id), figures(store))

    assert store.cancel(job_id) is False

    assert (store.get(job_id), figures(store)) == before


def test_cancel_of_an_unknown_job_raises_job_not_found(store: JobStore) -> None:
    with pytest.raises(JobNotFound):
        store.cancel(store.new_job_id())

    assert keyspace(store) == set()


# --- waiting -----------------------------------------------------------------------


def test_wait_until_ended_returns_false_after_the_timeout_for_a_running_job(
    store: JobStore, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    store.start(job_id, 0, "openai")
    began = time.monotonic()

    assert store.wait_until_ended(job_id, 0.2) is False

    assert time.monotonic() - began >= 0.2
    assert store.get(job_id).status is JobStatus.RUNNING


def test_wait_until_ended_returns_true_at_once_for_an_ended_job(
    store: JobStore, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    store.cancel(job_id)
    began = time.monotonic()

    assert store.wait_until_ended(job_id, LONG_WAIT_S) is True
    assert store.wait_until_ended(job_id, LONG_WAIT_S) is True

    assert time.monotonic() - began < LONG_WAIT_S / 2


def blocked_clients(client: redis.Redis) -> int | None:
    """How many clients the server has blocked, or None where it cannot tell (fakeredis)."""
    try:
        return int(client.info("clients")["blocked_clients"])
    except redis.ResponseError:
        return None


def test_every_waiter_wakes_when_the_job_ends(store: JobStore, make_request: MakeRequest) -> None:
    job_id = new_job(store, make_request)
    store.start(job_id, 0, "openai")
    ready = threading.Barrier(WAITERS + 1, timeout=LONG_WAIT_S)
    results: list[bool] = []
    lock = threading.Lock()

    def wait() -> None:
        ready.wait()
        ended = store.wait_until_ended(job_id, LONG_WAIT_S)
        with lock:
            results.append(ended)

    threads = [threading.Thread(target=wait, daemon=True) for _ in range(WAITERS)]
    for thread in threads:
        thread.start()
    ready.wait()
    # Where the server can tell, end the job only once every waiter is blocked on it.
    deadline = time.monotonic() + LONG_WAIT_S
    while blocked_clients(store.redis) not in (None, WAITERS) and time.monotonic() < deadline:
        time.sleep(0.01)  # bounded poll for a server-side condition, not to pass time
    assert blocked_clients(store.redis) in (None, WAITERS)
    began = time.monotonic()

    store.finish(job_id, JobStatus.SUCCEEDED, vendor="openai", response=make_response())
    for thread in threads:
        thread.join(timeout=LONG_WAIT_S)

    assert not any(thread.is_alive() for thread in threads)
    assert results == [True] * WAITERS
    assert time.monotonic() - began < LONG_WAIT_S / 2


# --- statistics --------------------------------------------------------------------


def run_mixed_workload(store: JobStore, clock: Clock, make_request: MakeRequest) -> list[str]:
    """Jobs that succeed, fail, retry, fall back and are cancelled on two vendors; their ids."""
    jobs: list[str] = []

    def job(vendor: str = "openai") -> str:
        clock.advance(0.25)
        job_id = new_job(store, make_request, vendor)
        jobs.append(job_id)
        return job_id

    def start(job_id: str, attempt: int, vendor: str, wait_s: float = 0.0) -> None:
        clock.advance(wait_s)
        assert store.start(job_id, attempt, vendor) == "ok"

    def succeed(job_id: str, vendor: str, **response: Any) -> None:
        clock.advance(0.5)
        assert store.finish(
            job_id, JobStatus.SUCCEEDED, vendor=vendor, response=make_response(vendor, **response)
        )

    def fail(job_id: str, vendor: str, error: DispatcherError) -> None:
        assert store.finish(job_id, JobStatus.FAILED, vendor=vendor, error=error)

    def retry(job_id: str, attempt: int, vendor: str) -> None:
        event = retry_event(clock, attempt + 1, vendor)
        result = store.reschedule(
            job_id,
            from_attempt=attempt,
            to_attempt=attempt + 1,
            event=event,
            counters=retry_counters(vendor),
        )
        assert result == "ok"

    def fall_back(job_id: str, attempt: int, source: str, target: str) -> None:
        event = JobEvent(
            kind=JobEventKind.REROUTED,
            at=at(clock()),
            attempt=attempt + 1,
            vendor=source,
            from_vendor=source,
            to_vendor=target,
        )
        counters = [("t:fallbacks", 1.0), (f"v:{source}:fallbacks", 1.0)]
        result = store.reschedule(
            job_id, from_attempt=attempt, to_attempt=attempt + 1, event=event, counters=counters
        )
        assert result == "ok"

    plain = job()
    start(plain, 0, "openai", wait_s=0.5)
    succeed(plain, "openai", latency_ms=120.5, prompt_tokens=12, completion_tokens=30)

    retried = job()
    start(retried, 0, "openai", wait_s=1.25)
    retry(retried, 0, "openai")
    start(retried, 1, "openai", wait_s=2.0)
    # A cheap model: the cost is small enough for Python to spell it with an exponent.
    succeed(
        retried, "openai", latency_ms=250.0, prompt_tokens=40, completion_tokens=8, cost_usd=2.5e-05
    )

    moved = job()
    start(moved, 0, "openai", wait_s=0.75)
    fall_back(moved, 0, "openai", "anthropic")
    start(moved, 1, "anthropic")
    succeed(
        moved,
        "anthropic",
        latency_ms=1800.0,
        prompt_tokens=100,
        completion_tokens=250,
        cost_usd=0.0031,
    )

    refused = job("anthropic")
    start(refused, 0, "anthropic", wait_s=0.25)
    fail(refused, "anthropic", VendorAuthError("bad key", vendor="anthropic", status_code=401))

    exhausted = job("anthropic")
    start(exhausted, 0, "anthropic", wait_s=3.5)
    retry(exhausted, 0, "anthropic")
    start(exhausted, 1, "anthropic")
    fail(exhausted, "anthropic", VendorUnavailable("overloaded", vendor="anthropic"))

    cancelled_queued = job()
    assert store.cancel(cancelled_queued)

    cancelled_running = job("anthropic")
    start(cancelled_running, 0, "anthropic", wait_s=0.5)
    assert store.cancel(cancelled_running)
    return jobs


def mean(values: list[float]) -> float:
    """The arithmetic mean, 0 for no values (as the statistics report it)."""
    return sum(values) / len(values) if values else 0.0


def tail(values: list[float]) -> tuple[float, float, float]:
    """p50, p95 and p99 of values, from their histogram."""
    histogram = {bucket: str(n) for bucket, n in Counter(bucket_of(v) for v in values).items()}
    return (
        percentile(histogram, 0.50),
        percentile(histogram, 0.95),
        percentile(histogram, 0.99),
    )


def expected_figures(records: list[JobRecord], vendor: str | None = None) -> dict[str, Any]:
    """The figures the statistics must show, for one vendor or all, derived from the records."""
    events = [event for record in records for event in record.events]
    # A job counts for the vendor of its final event; cancelled jobs count apart.
    ended = [
        r
        for r in records
        if r.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)
        and vendor in (None, r.events[-1].vendor)
    ]
    latencies = [r.vendor_latency_ms for r in ended if r.vendor_latency_ms is not None]
    return {
        "requests": len(ended),
        "successes": sum(r.status is JobStatus.SUCCEEDED for r in ended),
        "failures": sum(r.status is JobStatus.FAILED for r in ended),
        "retries": sum(e.kind is JobEventKind.RETRY and vendor in (None, e.vendor) for e in events),
        "fallbacks": sum(
            e.kind is JobEventKind.REROUTED and vendor in (None, e.from_vendor) for e in events
        ),
        "prompt_tokens": sum(r.usage.prompt_tokens for r in ended if r.usage),
        "completion_tokens": sum(r.usage.completion_tokens for r in ended if r.usage),
        "cost_usd": pytest.approx(sum(r.cost_usd for r in ended)),
        "avg_latency_ms": pytest.approx(mean(latencies)),
        "tail_latency_ms": pytest.approx(tail(latencies)),
    }


def vendors_in(records: list[JobRecord]) -> set[str]:
    """The vendors a job ended on, retried on or moved away from."""
    ended = {r.events[-1].vendor for r in records if r.status is not JobStatus.CANCELLED}
    retried = {e.vendor for r in records for e in r.events if e.kind is JobEventKind.RETRY}
    left = {e.from_vendor for r in records for e in r.events if e.kind is JobEventKind.REROUTED}
    return {vendor for vendor in ended | retried | left if vendor is not None}


def test_stats_equal_the_figures_derived_from_the_job_records(
    store: JobStore, clock: Clock, make_request: MakeRequest
) -> None:
    jobs = run_mixed_workload(store, clock, make_request)
    records = [store.get(job_id) for job_id in jobs]

    stats = store.stats()

    overall = expected_figures(records)
    assert {
        "requests": stats.total_requests,
        "successes": stats.successful_requests,
        "failures": stats.failed_requests,
        "retries": stats.retries,
        "fallbacks": stats.fallbacks,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "cost_usd": stats.total_cost_usd,
        "avg_latency_ms": stats.average_latency_ms,
        "tail_latency_ms": (stats.p50_latency_ms, stats.p95_latency_ms, stats.p99_latency_ms),
    } == overall
    assert stats.cancelled_requests == sum(r.status is JobStatus.CANCELLED for r in records)
    assert stats.average_cost_usd == pytest.approx(
        sum(r.cost_usd for r in records) / overall["requests"]
    )
    assert stats.success_rate() == pytest.approx(100.0 * overall["successes"] / overall["requests"])
    waits = [r.queue_wait_ms for r in records if r.queue_wait_ms is not None]
    assert stats.average_queue_wait_ms == pytest.approx(mean(waits))
    assert (
        stats.p50_queue_wait_ms,
        stats.p95_queue_wait_ms,
        stats.p99_queue_wait_ms,
    ) == pytest.approx(tail(waits))

    assert set(stats.vendor_stats) == vendors_in(records) == {"openai", "anthropic"}
    for name, figures_of in stats.vendor_stats.items():
        assert {
            "requests": figures_of.requests,
            "successes": figures_of.successes,
            "failures": figures_of.failures,
            "retries": figures_of.retries,
            "fallbacks": figures_of.fallbacks,
            "prompt_tokens": figures_of.prompt_tokens,
            "completion_tokens": figures_of.completion_tokens,
            "cost_usd": figures_of.total_cost_usd,
            "avg_latency_ms": figures_of.avg_latency_ms,
            "tail_latency_ms": (
                figures_of.p50_latency_ms,
                figures_of.p95_latency_ms,
                figures_of.p99_latency_ms,
            ),
        } == expected_figures(records, name), name


def test_stats_of_an_empty_store_are_all_zero(store: JobStore) -> None:
    stats = store.stats()

    assert stats == Stats()
    assert stats.success_rate() == 0.0


# --- load and latency, for routing ---------------------------------------------------------


def test_finish_keeps_a_moving_average_of_each_vendors_latency_and_loads_reads_it(
    store: JobStore, make_request: MakeRequest
) -> None:
    for latency in (100.0, 200.0):
        job_id = new_job(store, make_request)
        assert store.claim(job_id, 0, "openai").verdict == "ok"
        response = make_response(latency_ms=latency)
        assert store.finish(job_id, JobStatus.SUCCEEDED, vendor="openai", response=response)
    running = new_job(store, make_request)
    assert store.claim(running, 0, "openai").verdict == "ok"
    store.redis.lpush("llm.openai", "a message")

    loads = store.traffic.loads(
        {"openai": "llm.openai", "anthropic": "llm.anthropic"},
        {"openai": START_S - 60, "anthropic": START_S - 60},
    )

    assert loads["openai"] == Load(queue_depth=1, in_flight=1, latency_ms=120.0)  # 100 + 0.2 x 100
    assert loads["anthropic"] == Load(queue_depth=0, in_flight=0, latency_ms=None)
    # Jobs that started before `running_since` are not counted: their worker died.
    later = store.traffic.loads({"openai": "llm.openai"}, {"openai": START_S + 1})
    assert later["openai"].in_flight == 0
    store.redis.delete("llm.openai")
