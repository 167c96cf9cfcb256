"""Heartbeats: a worker that stops beating is taken back once, with what it held."""

from __future__ import annotations

import pytest
import redis

from dispatcher.state.store import JobStore, Keys
from dispatcher.state.worker_registry import WorkerRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def hold(registry: WorkerRegistry, worker: str, *tags: str) -> None:
    for tag in tags:
        registry.hold(worker, tag)


@pytest.fixture
def registry(fake_or_real_redis: redis.Redis, clock: Clock) -> WorkerRegistry:
    return WorkerRegistry(fake_or_real_redis, Keys("llmd-reg-test"), now=clock)


def test_a_beating_worker_is_alive_until_its_time_runs_out(
    registry: WorkerRegistry, clock: Clock
) -> None:
    hold(registry, "w1@host:11", "tag-a", "tag-b")
    registry.beat("w1@host:11", dead_after_s=30)

    assert registry.living() == {"w1@host:11": 1_030.0}
    clock.now = 1_029.0
    assert registry.take_dead() == {}


def test_a_worker_that_stopped_beating_is_taken_back_once_with_its_tags(
    registry: WorkerRegistry, clock: Clock
) -> None:
    hold(registry, "w1@host:11", "tag-a", "tag-b")
    registry.beat("w1@host:11", dead_after_s=30)
    hold(registry, "w2@host:12", "tag-c")
    registry.beat("w2@host:12", dead_after_s=30)
    clock.now = 1_020.0
    registry.beat("w2@host:12", dead_after_s=30)  # w2 goes on beating

    clock.now = 1_031.0
    assert registry.take_dead() == {"w1@host:11": ["tag-a", "tag-b"]}
    assert registry.take_dead() == {}, "taken once"
    assert set(registry.living()) == {"w2@host:12"}
    assert not registry.redis.exists(registry.keys.worker_held("w1@host:11"))


def test_what_a_worker_holds_follows_its_deliveries_acks_and_forgotten_tags(
    registry: WorkerRegistry, clock: Clock
) -> None:
    hold(registry, "w1@host:11", "tag-a", "tag-b", "tag-c")
    registry.release("w1@host:11", "tag-a")
    registry.beat("w1@host:11", dead_after_s=30, forget=["tag-b"])
    hold(registry, "w1@host:11", "tag-z")

    clock.now = 2_000.0
    assert registry.take_dead() == {"w1@host:11": ["tag-c", "tag-z"]}


def test_a_worker_that_left_is_never_taken_back(registry: WorkerRegistry, clock: Clock) -> None:
    hold(registry, "w1@host:11", "tag-a")
    registry.beat("w1@host:11", dead_after_s=30)
    registry.leave("w1@host:11")

    clock.now = 2_000.0
    assert registry.take_dead() == {}
    assert registry.living() == {}


def test_a_dead_worker_holding_nothing_is_removed_all_the_same(
    registry: WorkerRegistry, clock: Clock
) -> None:
    registry.beat("w1@host:11", dead_after_s=30)

    clock.now = 2_000.0
    assert registry.take_dead() == {"w1@host:11": []}
    assert registry.living() == {}


@pytest.mark.parametrize("worker", ["", "a b", "x\ny", "w/../../etc"])
def test_a_worker_id_becomes_a_key_only_when_it_is_one(worker: str) -> None:
    with pytest.raises(ValueError, match="not a worker id"):
        Keys("p").worker_held(worker)


def test_the_store_offers_the_registry(fake_or_real_redis: redis.Redis) -> None:
    store = JobStore(fake_or_real_redis, "llmd-reg-test")
    store.workers.beat("w9@h:1", dead_after_s=5)
    assert "w9@h:1" in store.workers.living()
