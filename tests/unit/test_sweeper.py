"""The sweeper: a queued job whose message the broker lost is sent again, and only such a job.

Each store-backed test runs on fakeredis and (marked integration) on the private
redis-server. The sweeper's eyes on the broker (`find_messages`) are a stand-in
here that says which jobs have a message; `test_queued_messages.py` checks the real
reader against messages Celery itself wrote.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Iterable
from typing import Any

import pytest
import redis

from dispatcher.broker.messages import RunJob, RunJobs
from dispatcher.models import JobEvent, JobEventKind, JobStatus
from dispatcher.runner.sweeper import Presence, Sweeper, sweep_forever
from dispatcher.state.batches import NewItem
from dispatcher.state.store import JobStore
from tests.unit.test_store import PREFIX, Clock, MakeRequest, make_route

GRACE_S = 60.0


class Broker:
    """Stands in for the broker: which jobs have a message, and what the sweeper sent."""

    def __init__(self) -> None:
        self.present: set[str] = set()
        self.unscanned: set[str] = set()
        self.unrung: dict[str, int] = {}
        self.stale: set[str] = set()
        self.asked: list[set[str]] = []
        self.candidates: list[set[str]] = []
        self.rung: list[tuple[str, int]] = []
        self.sent: list[tuple[RunJob, str, int]] = []
        self.sent_jobs: list[tuple[RunJobs, str]] = []

    def find(self, lanes: Iterable[str], candidates: Collection[str]) -> Presence:
        self.asked.append(set(lanes))
        self.candidates.append(set(candidates))
        return Presence(
            frozenset(self.present),
            frozenset(self.unscanned),
            dict(self.unrung),
            frozenset(self.stale),
        )

    def ring(self, queue: str, celery_priority: int) -> None:
        self.rung.append((queue, celery_priority))

    def send(self, message: RunJob, queue: str, priority: int, delay_s: float) -> None:
        assert delay_s == 0.0
        self.sent.append((message, queue, priority))

    def send_jobs(self, message: RunJobs, queue: str) -> None:
        self.sent_jobs.append((message, queue))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(fake_or_real_redis: redis.Redis, clock: Clock) -> JobStore:
    return JobStore(fake_or_real_redis, PREFIX, job_ttl_s=3_600, now=clock)


@pytest.fixture
def broker() -> Broker:
    return Broker()


def sweeper_on(store: JobStore, broker: Broker, kind: type[Sweeper] = Sweeper) -> Sweeper:
    """A sweeper of `kind` whose eyes and hands are `broker`'s."""
    return kind(
        store,
        grace_s=GRACE_S,
        suspect_ttl_s=90.0,
        find_messages=broker.find,
        send=broker.send,
        send_jobs=broker.send_jobs,
        ring=broker.ring,
    )


@pytest.fixture
def sweeper(store: JobStore, broker: Broker) -> Sweeper:
    return sweeper_on(store, broker)


def waiting(store: JobStore) -> dict[str, float]:
    entries = store.redis.zrange(store.keys.waiting(), 0, -1, withscores=True)
    return {member.decode(): score for member, score in entries}


def new_job(store: JobStore, make_request: MakeRequest, vendor: str = "openai") -> str:
    job_id = store.new_job_id()
    # As the router routes it: the route carries the request's priority.
    route = make_route(vendor, "anthropic").model_copy(update={"priority": 7})
    store.create(job_id, make_request(priority=7), route)
    return job_id


def new_batch(
    store: JobStore,
    make_request: MakeRequest,
    count: int,
    numbered: Callable[[list[str]], list[list[str]]],
) -> tuple[str, list[str]]:
    """A batch of `count` items on openai; `numbered` splits its ids into chained messages."""
    route = make_route("openai").model_copy(update={"queue": "llm.openai.batch"})
    items = [NewItem(store.new_job_id(), f"c{i}", make_request(), route) for i in range(count)]
    ids = [item.job_id for item in items]
    messages = {("openai", n): part for n, part in enumerate(numbered(ids))}
    batch_id = store.batches.new_batch_id()
    store.batches.create(batch_id, items, messages=messages, window=1 if messages else 0)
    return batch_id, ids


RETRY = JobEvent(kind=JobEventKind.RETRY, attempt=1, reason="500", delay_s=10.0)


# --- the index -----------------------------------------------------------------------


def test_a_job_waits_in_the_index_from_its_submit_until_a_message_starts_it(
    store: JobStore, make_request: MakeRequest, clock: Clock
) -> None:
    job_id = new_job(store, make_request)
    assert waiting(store) == {job_id: clock.now_s}

    assert store.start(job_id, 0, "openai") == "ok"
    assert waiting(store) == {}

    clock.advance(1.0)
    nxt = RunJob(job_id, 1, 1, 0, "anthropic")
    result = store.reschedule(
        job_id, from_attempt=0, to_attempt=1, event=RETRY, next_args=nxt.as_args(), delay_s=10.0
    )
    assert result == "ok"
    assert waiting(store) == {job_id: clock.now_s + 10.0}
    assert json.loads(store.redis.hget(store.keys.job(job_id), "next")) == nxt.as_args()


def test_a_stale_hand_off_does_not_put_the_job_back_in_the_index(
    store: JobStore, make_request: MakeRequest
) -> None:
    job_id = new_job(store, make_request)
    assert store.start(job_id, 0, "openai") == "ok"
    assert store.start(job_id, 2, "openai") == "ok"  # a newer message took over

    assert store.reschedule(job_id, from_attempt=0, to_attempt=1, event=RETRY) == "stale"
    assert waiting(store) == {}


# --- judging ---------------------------------------------------------------------------


def test_a_job_within_its_grace_is_not_even_looked_for(
    store: JobStore, make_request: MakeRequest, sweeper: Sweeper, broker: Broker, clock: Clock
) -> None:
    new_job(store, make_request)
    clock.advance(GRACE_S - 1)

    report = sweeper.sweep()

    assert report.overdue == 0
    assert broker.asked == []


def test_an_overdue_job_whose_message_is_in_the_broker_is_left_alone(
    store: JobStore, make_request: MakeRequest, sweeper: Sweeper, broker: Broker, clock: Clock
) -> None:
    job_id = new_job(store, make_request)
    broker.present.add(job_id)
    for _ in range(3):
        clock.advance(GRACE_S + 1)
        report = sweeper.sweep()
        assert (report.overdue, report.suspects, report.requeued) == (1, 0, [])

    assert broker.asked[-1] == {"llm.openai", "llm.anthropic"}  # the route's vendors
    assert broker.sent == []
    assert store.get(job_id).attempt == 0


def test_a_lane_whose_ready_jobs_have_no_bell_is_rung_and_dead_takings_forgotten(
    store: JobStore, make_request: MakeRequest, sweeper: Sweeper, broker: Broker, clock: Clock
) -> None:
    job_id = new_job(store, make_request)
    broker.present.add(job_id)  # waiting in its lane's ready set
    broker.unrung = {"llm.openai": 2}
    broker.stale = {"dead-bell"}
    store.redis.hset(store.keys.taken(), mapping={"dead-bell": "a b", "live-bell": "c"})
    clock.advance(GRACE_S + 1)

    report = sweeper.sweep()

    assert broker.candidates[-1] == {job_id}  # asked which of the overdue jobs wait ready
    assert broker.rung == [("llm.openai", 2)]
    assert report.rung == ["llm.openai"]
    assert (report.suspects, report.requeued, broker.sent) == (0, [], [])
    assert store.redis.hgetall(store.keys.taken()) == {b"live-bell": b"c"}


def test_a_job_missing_in_one_pass_only_is_not_sent_again(
    store: JobStore, make_request: MakeRequest, sweeper: Sweeper, broker: Broker, clock: Clock
) -> None:
    job_id = new_job(store, make_request)
    clock.advance(GRACE_S + 1)
    assert sweeper.sweep().suspects == 1

    broker.present.add(job_id)  # it was between two places (delivered, restored)
    clock.advance(30)
    report = sweeper.sweep()

    assert (report.suspects, report.requeued) == (0, [])
    assert broker.sent == []
    assert store.waiting.suspects() == {}


def test_a_job_missing_twice_is_sent_again_as_a_new_attempt_and_the_lost_one_is_stale(
    store: JobStore, make_request: MakeRequest, sweeper: Sweeper, broker: Broker, clock: Clock
) -> None:
    job_id = new_job(store, make_request)
    clock.advance(GRACE_S + 1)
    first = sweeper.sweep()
    assert (first.suspects, first.requeued, broker.sent) == (1, [], [])

    clock.advance(30)
    second = sweeper.sweep()

    assert second.requeued == [job_id]
    assert broker.sent == [(RunJob(job_id, 1, 0, 0, "openai"), "llm.openai", 7)]
    record = store.get(job_id)
    assert (record.status, record.attempt) == (JobStatus.QUEUED, 1)
    requeued = [e for e in record.events if e.kind is JobEventKind.REQUEUED]
    assert [(e.attempt, e.vendor) for e in requeued] == [(1, "openai")]
    assert "lost" in (requeued[0].reason or "")
    assert waiting(store) == {job_id: clock.now_s}  # watched again, from now
    # The lost message, should it turn up, does not run the job; the new one does.
    assert store.start(job_id, 0, "openai") == "stale"
    assert store.start(job_id, 1, "openai") == "ok"
    assert waiting(store) == {}


def test_after_a_worker_died_one_look_with_a_short_grace_is_enough(
    store: JobStore, make_request: MakeRequest, sweeper: Sweeper, broker: Broker, clock: Clock
) -> None:
    lost_id = new_job(store, make_request)
    present_id = new_job(store, make_request)
    broker.present.add(present_id)
    clock.advance(11)  # well within the schedule's grace, past the dead worker's beat

    assert sweeper.sweep().overdue == 0, "the scheduled pass waits for its grace"
    report = sweeper.sweep(grace_s=10, confirm=False)

    assert report.requeued == [lost_id]
    assert broker.sent == [(RunJob(lost_id, 1, 0, 0, "openai"), "llm.openai", 7)]


def test_a_lost_retry_is_sent_again_on_its_deployment_lane_and_retry_count(
    store: JobStore, make_request: MakeRequest, sweeper: Sweeper, broker: Broker, clock: Clock
) -> None:
    job_id = new_job(store, make_request)
    assert store.start(job_id, 0, "openai") == "ok"
    nxt = RunJob(job_id, 1, 1, 2, "anthropic")
    store.reschedule(
        job_id, from_attempt=0, to_attempt=1, event=RETRY, next_args=nxt.as_args(), delay_s=10.0
    )
    clock.advance(10.0 + GRACE_S - 1)
    assert sweeper.sweep().overdue == 0  # not due plus grace yet
    clock.advance(2.0)
    sweeper.sweep()
    clock.advance(30)
    sweeper.sweep()

    assert broker.asked[0] == {"llm.openai", "llm.anthropic"}
    assert broker.sent == [(RunJob(job_id, 2, 1, 2, "anthropic"), "llm.anthropic", 7)]


def test_an_advance_rate_limit_charge_passes_to_the_message_sent_again(
    store: JobStore, make_request: MakeRequest, sweeper: Sweeper, clock: Clock
) -> None:
    job_id = new_job(store, make_request)
    store.redis.hset(store.keys.job(job_id), "limit_paid", "0")
    clock.advance(GRACE_S + 1)
    sweeper.sweep()
    sweeper.sweep()

    assert store.redis.hget(store.keys.job(job_id), "limit_paid") == b"1"


def test_a_job_no_longer_queued_leaves_the_index_and_is_not_looked_for(
    store: JobStore, make_request: MakeRequest, sweeper: Sweeper, broker: Broker, clock: Clock
) -> None:
    job_id = new_job(store, make_request)
    assert store.cancel(job_id)
    clock.advance(GRACE_S + 1)

    report = sweeper.sweep()

    assert report.overdue == 1
    assert waiting(store) == {}
    assert broker.asked == []
    assert broker.sent == []


def test_jobs_of_a_lane_too_long_to_scan_are_not_judged(
    store: JobStore, make_request: MakeRequest, sweeper: Sweeper, broker: Broker, clock: Clock
) -> None:
    backlog = new_job(store, make_request)
    other = new_job(store, make_request, vendor="anthropic")
    broker.unscanned.add("llm.openai")
    for _ in range(2):
        clock.advance(GRACE_S + 1)
        report = sweeper.sweep()
    assert report.unjudged == 1
    assert report.requeued == [other]
    assert [message.job_id for message, _, _ in broker.sent] == [other]
    assert store.get(backlog).attempt == 0


def test_a_lost_batch_message_is_sent_again_whole_with_its_place_in_the_chain(
    store: JobStore, make_request: MakeRequest, sweeper: Sweeper, broker: Broker, clock: Clock
) -> None:
    batch_id, ids = new_batch(store, make_request, 5, lambda ids: [ids[:2], ids[2:4], ids[4:]])
    assert waiting(store) == {}  # no message out yet
    store.waiting.expect(ids[:2])
    assert store.start(ids[0], 0, "openai") == "ok"  # one item of the message ran

    clock.advance(GRACE_S + 1)
    sweeper.sweep()
    clock.advance(30)
    report = sweeper.sweep()

    assert report.requeued == [ids[1]]
    assert report.batch_messages == 1
    assert broker.sent_jobs == [
        (RunJobs("openai", batch_id, tuple(ids[:2]), 1, 1), "llm.openai.batch")
    ]
    assert broker.sent == []
    record = store.get(ids[1])
    assert (record.status, record.attempt) == (JobStatus.QUEUED, 0)
    assert [e.kind for e in record.events] == [JobEventKind.QUEUED, JobEventKind.REQUEUED]
    assert set(waiting(store)) == {ids[1]}


def test_a_lost_unchained_batch_message_comes_back_unchained(
    store: JobStore, make_request: MakeRequest, sweeper: Sweeper, broker: Broker, clock: Clock
) -> None:
    batch_id, ids = new_batch(store, make_request, 2, lambda ids: [])  # as retry_failed's
    store.waiting.expect(ids)

    for _ in range(2):
        clock.advance(GRACE_S + 1)
        sweeper.sweep()

    [(message, queue)] = broker.sent_jobs
    assert queue == "llm.openai.batch"
    assert (message.vendor, message.batch, message.next_message) == ("openai", batch_id, -1)
    assert sorted(message.job_ids) == sorted(ids)


# --- the schedule ----------------------------------------------------------------------


def test_the_schedule_outlives_a_failed_pass_and_one_worker_sweeps_per_interval(
    store: JobStore, broker: Broker
) -> None:
    calls: list[str] = []
    stop = threading.Event()

    class Flaky(Sweeper):
        def sweep(self) -> Any:
            calls.append(threading.current_thread().name)
            if len(calls) == 1:
                raise redis.ConnectionError("Redis went away")
            if len(calls) >= 3:
                stop.set()
            return None

    flaky = sweeper_on(store, broker, Flaky)
    assert store.waiting.take_turn(0.05)
    assert not store.waiting.take_turn(0.05)  # the turn is held
    worker = threading.Thread(target=sweep_forever, args=(flaky, 0.1, stop), name="sweeps")
    worker.start()
    worker.join(timeout=20)

    assert not worker.is_alive()
    assert len(calls) == 3
