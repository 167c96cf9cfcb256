"""Resetting a vendor's circuit, on fakeredis and a private redis-server: one atomic step.

A reset deletes the circuit's hash, so the next claim and the next read of the
circuits, by any process, find it closed with no failures counted.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from dispatcher.models import CircuitState, Request, Route
from dispatcher.state.circuit import CircuitCheck
from dispatcher.state.store import JobStore
from tests.unit.test_store import PREFIX, Clock

RESET_TIMEOUT_S = 30.0
CHECK = CircuitCheck(reset_timeout_s=RESET_TIMEOUT_S, probe_timeout_s=10.0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(fake_or_real_redis: redis.Redis, clock: Clock) -> JobStore:
    return JobStore(fake_or_real_redis, PREFIX, now=clock)


def queued_job(store: JobStore, make_request: Callable[..., Request]) -> str:
    job_id = store.new_job_id()
    store.create(job_id, make_request(), Route(vendor="openai", model="gpt-4o", queue="llm.openai"))
    return job_id


def test_a_reset_closes_an_open_circuit_for_claims_and_for_readers(
    store: JobStore, make_request: Callable[..., Request]
) -> None:
    assert store.circuits.trip("openai", failure_threshold=1, keep_s=60) == "open"
    refused = queued_job(store, make_request)
    assert store.claim(refused, 0, "openai", circuit=CHECK).verdict == "open"

    assert store.circuits.reset("openai", RESET_TIMEOUT_S) is CircuitState.OPEN

    assert store.circuits.states(["openai"], RESET_TIMEOUT_S) == {}
    assert not store.redis.exists(store.keys.circuit("openai"))
    assert store.claim(refused, 0, "openai", circuit=CHECK).verdict == "ok"


def test_a_reset_forgets_the_failures_counted_so_far(store: JobStore) -> None:
    for _ in range(2):
        assert store.circuits.trip("openai", failure_threshold=3, keep_s=60) == "closed"

    assert store.circuits.reset("openai", RESET_TIMEOUT_S) is CircuitState.CLOSED

    # Without the reset, the next failure would be the third in a row and open it.
    for _ in range(2):
        assert store.circuits.trip("openai", failure_threshold=3, keep_s=60) == "closed"
    assert store.circuits.trip("openai", failure_threshold=3, keep_s=60) == "open"


def test_a_reset_reports_a_half_open_circuit_as_it_was(store: JobStore, clock: Clock) -> None:
    assert store.circuits.trip("openai", failure_threshold=1, keep_s=60) == "open"
    clock.advance(RESET_TIMEOUT_S + 1.0)
    assert store.circuits.states(["openai"], RESET_TIMEOUT_S)["openai"].state is (
        CircuitState.HALF_OPEN
    )

    assert store.circuits.reset("openai", RESET_TIMEOUT_S) is CircuitState.HALF_OPEN
    assert store.circuits.states(["openai"], RESET_TIMEOUT_S) == {}


def test_resetting_a_closed_circuit_changes_nothing_else(store: JobStore) -> None:
    assert store.circuits.trip("anthropic", failure_threshold=1, keep_s=60) == "open"

    assert store.circuits.reset("openai", RESET_TIMEOUT_S) is CircuitState.CLOSED

    assert store.circuits.states(["anthropic", "openai"], RESET_TIMEOUT_S)["anthropic"].state is (
        CircuitState.OPEN
    )
    assert [key.decode() for key in store.redis.keys("*")] == [store.keys.circuit("anthropic")]
