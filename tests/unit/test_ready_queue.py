"""A lane's ready set and its bells: jobs are taken in order, never lost between bells.

Each test runs on fakeredis and (marked integration) on the private redis-server.
"""

from __future__ import annotations

import pytest
import redis

from dispatcher.broker.messages import TAKE_LIMIT
from dispatcher.broker.ready_queue import (
    BELL_TTL_S,
    Bell,
    ReadyQueue,
    TakeAllowance,
    priority_of_score,
)
from dispatcher.state.store import Keys

LANE = "llm.openai"


@pytest.fixture
def ready(fake_or_real_redis: redis.Redis) -> ReadyQueue:
    return ReadyQueue(fake_or_real_redis, Keys("rq-test"))


def bell(name: str) -> Bell:
    """A stand-in bell message, told apart by `name`."""
    return Bell(LANE, f'{{"bell": "{name}"}}')


def enqueue(ready: ReadyQueue, job_id: str, priority: int = 3) -> None:
    pipe = ready.redis.pipeline(transaction=True)
    ready.enqueue(pipe, job_id, LANE, priority, bell(f"for {job_id}"))
    pipe.execute()


def bells(ready: ReadyQueue) -> list[str]:
    return [raw.decode() for raw in ready.redis.lrange(LANE, 0, -1)]


def test_only_the_first_job_of_an_idle_lane_rings(ready: ReadyQueue) -> None:
    for job_id in ("j1", "j2", "j3"):
        enqueue(ready, job_id)

    assert bells(ready) == ['{"bell": "for j1"}']
    ttl = ready.redis.ttl(ready.keys.bell(LANE, 3))
    assert 0 < ttl <= BELL_TTL_S
    assert ready.redis.zcard(ready.keys.ready(LANE)) == 3


def test_a_bell_takes_in_order_and_rings_the_next_while_jobs_are_left(ready: ReadyQueue) -> None:
    for job_id in ("j1", "j2", "j3"):
        enqueue(ready, job_id)
    ready.redis.delete(LANE)  # the first bell, delivered

    first = ready.take(LANE, 3, "bell-1", bell("next-1"), limit=2)

    assert (first.job_ids, first.again) == (["j1", "j2"], False)
    assert bells(ready) == ['{"bell": "next-1"}']  # one left: the next bell is out
    assert ready.redis.hget(ready.keys.taken(), "bell-1") == b"j1 j2"

    second = ready.take(LANE, 3, "bell-2", bell("next-2"), limit=2)

    assert second.job_ids == ["j3"]
    assert bells(ready) == ['{"bell": "next-1"}']  # none left: no further bell ...
    assert not ready.redis.exists(ready.keys.bell(LANE, 3))  # ... and the next submit rings
    enqueue(ready, "j4")
    assert bells(ready) == ['{"bell": "for j4"}', '{"bell": "next-1"}']


def test_a_bell_delivered_again_runs_what_it_took_and_takes_nothing_more(
    ready: ReadyQueue,
) -> None:
    for job_id in ("j1", "j2", "j3"):
        enqueue(ready, job_id)
    ready.take(LANE, 3, "bell-1", bell("next"), limit=2)

    again = ready.take(LANE, 3, "bell-1", bell("unused"), limit=2)

    assert (again.job_ids, again.again) == (["j1", "j2"], True)
    assert ready.redis.zrange(ready.keys.ready(LANE), 0, -1) == [b"j3"]
    ready.release("bell-1")
    assert not ready.redis.hexists(ready.keys.taken(), "bell-1")


def test_an_empty_take_clears_the_bell_and_records_nothing(ready: ReadyQueue) -> None:
    enqueue(ready, "j1")
    ready.take(LANE, 3, "bell-1", bell("next"), limit=5)

    empty = ready.take(LANE, 3, "bell-2", bell("never"), limit=5)

    assert empty.job_ids == []
    assert not ready.redis.hexists(ready.keys.taken(), "bell-2")
    assert '{"bell": "never"}' not in bells(ready)


def test_the_most_urgent_priority_is_taken_first_then_order_of_arrival(
    ready: ReadyQueue,
) -> None:
    enqueue(ready, "routine-1", priority=3)
    enqueue(ready, "urgent", priority=0)
    enqueue(ready, "routine-2", priority=3)
    scores = dict(ready.redis.zrange(ready.keys.ready(LANE), 0, -1, withscores=True))

    assert [priority_of_score(scores[k]) for k in (b"urgent", b"routine-1")] == [0, 3]
    taken = ready.take(LANE, 0, "bell", bell("next"), limit=3)
    assert taken.job_ids == ["urgent", "routine-1", "routine-2"]


def test_ring_and_forget_are_the_sweepers_repairs(ready: ReadyQueue) -> None:
    ready.redis.hset(ready.keys.taken(), mapping={"gone": "j1", "alive": "j2"})

    ready.ring(LANE, 6, bell("again"))
    ready.forget(["gone"])

    assert bells(ready) == ['{"bell": "again"}']
    assert ready.redis.exists(ready.keys.bell(LANE, 6))
    assert ready.redis.hgetall(ready.keys.taken()) == {b"alive": b"j2"}


def test_a_bell_takes_up_to_50_within_the_allowance_and_one_past_it() -> None:
    allowance = TakeAllowance(max_in_flight=120)
    assert allowance.limit("openai") == TAKE_LIMIT == 50

    with allowance.holding("openai", 100):
        assert allowance.limit("openai") == 20  # what is left of the 120
        assert allowance.limit("anthropic") == 50  # counted per vendor
        with allowance.holding("openai", 20):
            assert allowance.limit("openai") == 1  # full: one, so the chain goes on
        assert allowance.held("openai") == 100

    assert allowance.held("openai") == 0


def test_the_allowance_lets_go_of_jobs_whose_run_failed() -> None:
    allowance = TakeAllowance(max_in_flight=10)

    with pytest.raises(RuntimeError), allowance.holding("openai", 10):
        raise RuntimeError("Redis went away")

    assert allowance.limit("openai") == 10
