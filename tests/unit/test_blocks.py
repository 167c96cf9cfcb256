"""Retry-After blocks, one per deployment, against fakeredis and a private redis-server.

Each test runs twice (the `fake_or_real_redis` fixture): on fakeredis (Lua
through lupa) and, marked `integration`, on the session's private
redis-server. Time comes from a settable clock shared by the store and its
blocks; no test sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import redis

from dispatcher.models import Deployment, Request, Route
from dispatcher.state.store import JobStore

PREFIX = "llmd-test"
START_S = 1_700_000_000.0
GPT = Deployment(vendor="openai", model="gpt-4o")
MINI = Deployment(vendor="openai", model="gpt-4o-mini")
CLAUDE = Deployment(vendor="anthropic", model="claude-3-5-haiku")


class Clock:
    """A clock that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now_s = START_S

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(fake_or_real_redis: redis.Redis, clock: Clock) -> JobStore:
    return JobStore(fake_or_real_redis, PREFIX, now=clock)


def new_job(store: JobStore, make_request: Callable[..., Request], *route: Deployment) -> str:
    """A queued job whose route is `route` (first the primary, then its fallbacks)."""
    job_id = store.new_job_id()
    primary, *fallbacks = route
    chosen = Route(
        vendor=primary.vendor,
        model=primary.model,
        fallbacks=fallbacks,
        queue=f"llm.{primary.vendor}",
    )
    store.create(job_id, make_request(model=primary.model), chosen)
    return job_id


# --- the blocks ----------------------------------------------------------------------


def test_a_block_holds_back_only_the_deployment_that_got_it(store: JobStore) -> None:
    assert store.blocks.block("openai", "gpt-4o", 30.0)

    assert store.blocks.until([GPT, MINI, CLAUDE]) == {GPT: START_S + 30.0}
    assert store.blocks.until([]) == {}


def test_a_shorter_later_block_does_not_shorten_a_longer_one(store: JobStore, clock: Clock) -> None:
    store.blocks.block("openai", "gpt-4o", 30.0)
    clock.advance(10.0)

    assert not store.blocks.block("openai", "gpt-4o", 5.0)

    assert store.blocks.until([GPT]) == {GPT: START_S + 30.0}


def test_a_longer_later_block_ends_when_the_later_retry_after_does(
    store: JobStore, clock: Clock
) -> None:
    store.blocks.block("openai", "gpt-4o", 30.0)
    clock.advance(10.0)

    assert store.blocks.block("openai", "gpt-4o", 60.0)

    assert store.blocks.until([GPT]) == {GPT: START_S + 70.0}


def test_repeated_429s_keep_the_latest_end_and_never_add_their_waits_up(
    store: JobStore, clock: Clock
) -> None:
    # Three 429s a quarter second apart, each asking for 1 s: the block ends 1 s after
    # the last of them, not 3 s after the first.
    for _ in range(3):
        assert store.blocks.block("openai", "gpt-4o", 1.0)
        clock.advance(0.25)

    assert store.blocks.until([GPT]) == {GPT: START_S + 1.5}


def test_a_block_ends_with_its_time(store: JobStore, clock: Clock) -> None:
    store.blocks.block("openai", "gpt-4o", 30.0)
    store.blocks.block("anthropic", "claude-3-5-haiku", 120.0)
    clock.advance(30.0)

    assert store.blocks.until([GPT, CLAUDE]) == {CLAUDE: START_S + 120.0}


def test_a_block_of_zero_seconds_writes_nothing(store: JobStore) -> None:
    assert not store.blocks.block("openai", "gpt-4o", 0.0)

    assert store.blocks.until([GPT]) == {}
    assert store.redis.keys("*") == []


def test_the_vendors_blocks_expire_with_the_longest_and_ended_ones_are_dropped(
    store: JobStore, clock: Clock
) -> None:
    key = store.keys.blocks("openai")
    store.blocks.block("openai", "gpt-4o", 1.0)
    clock.advance(2.0)

    store.blocks.block("openai", "gpt-4o-mini", 30.0)
    store.blocks.block("openai", "o1", 10.0)

    assert set(store.redis.hkeys(key)) == {b"gpt-4o-mini", b"o1"}
    # The key's time to live comes from our clock: 30 s from now, less the few ms since.
    assert 29_000 < store.redis.pttl(key) <= 30_000


def test_any_model_name_is_a_block_of_its_own(store: JobStore) -> None:
    odd = Deployment(vendor="openai", model="ft:gpt-4o:org:name:id *?\\")
    store.blocks.block("openai", odd.model, 30.0)

    assert store.blocks.until([odd, GPT]) == {odd: START_S + 30.0}


def test_concurrent_blocks_keep_the_longest(store: JobStore) -> None:
    # Workers hitting 429s on one deployment at once, each told a different wait:
    # whatever the interleaving, the block that stands is the longest.
    waits = [5.0, 60.0, 10.0, 45.0, 1.0, 30.0, 59.0, 20.0]
    barrier = threading.Barrier(len(waits))

    def block(seconds: float) -> None:
        barrier.wait(timeout=10)
        store.blocks.block("openai", "gpt-4o", seconds)

    threads = [threading.Thread(target=block, args=(w,)) for w in waits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert store.blocks.until([GPT]) == {GPT: START_S + max(waits)}


# --- claims ---------------------------------------------------------------------------


def test_a_claim_for_a_blocked_deployment_is_refused_with_its_end_and_writes_nothing(
    store: JobStore, clock: Clock, make_request: Callable[..., Request]
) -> None:
    job_id = new_job(store, make_request, GPT)
    store.blocks.block("openai", "gpt-4o", 30.0)
    before = store.get(job_id)

    claim = store.claim(job_id, 0, "openai")

    assert (claim.verdict, claim.blocked_until) == ("blocked", START_S + 30.0)
    assert store.get(job_id) == before
    clock.advance(30.0)
    assert store.claim(job_id, 0, "openai").verdict == "ok"


def test_a_claim_for_another_model_of_a_blocked_vendor_starts(
    store: JobStore, make_request: Callable[..., Request]
) -> None:
    store.blocks.block("openai", "gpt-4o", 30.0)
    other_model = new_job(store, make_request, MINI)
    falls_back_to_it = new_job(store, make_request, GPT, MINI)

    assert store.claim(other_model, 0, "openai").verdict == "ok"
    assert store.claim(falls_back_to_it, 0, "openai").verdict == "blocked"
    # The same job's message for its fallback, the vendor's other model, may go.
    assert store.claim(falls_back_to_it, 1, "openai", deployment=1).verdict == "ok"


def test_a_claim_naming_a_deployment_the_route_lacks_is_not_held_back_by_a_block(
    store: JobStore, make_request: Callable[..., Request]
) -> None:
    # The runner refuses such a message after the claim; the claim only must not fail.
    job_id = new_job(store, make_request, GPT)
    store.blocks.block("openai", "gpt-4o", 30.0)

    assert store.claim(job_id, 0, "openai", deployment=3).verdict == "ok"
