"""Shared token buckets: which buckets a call takes from, and how they fill and pay.

Each test runs on fakeredis and, marked `integration`, on the session's private
redis-server. Time comes from a settable clock: nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from dispatcher.config.schema import RateLimit, VendorConfig
from dispatcher.models import Request
from dispatcher.state.ratelimit import RateLimiter, buckets_for, estimated_tokens
from dispatcher.state.store import Bucket, Keys

PREFIX = "llmd-limit-test"
START_S = 1_700_000_000.0
KEYS = Keys(PREFIX)


class Clock:
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
def limiter(fake_or_real_redis: redis.Redis, clock: Clock) -> RateLimiter:
    return RateLimiter(fake_or_real_redis, now=clock)


def rpm_bucket(rpm: int, burst: int, name: str = "all") -> Bucket:
    return Bucket(f"{PREFIX}:limit:v:{name}:rpm", "rpm", rpm / 60.0, float(burst), 1.0)


def tpm_bucket(tpm: int, burst: int, cost: float) -> Bucket:
    return Bucket(f"{PREFIX}:limit:v:all:tpm", "tpm", tpm / 60.0, float(burst), cost)


# --- which buckets ---------------------------------------------------------------------


def test_a_vendor_without_limits_takes_from_no_bucket(
    make_request: Callable[..., Request],
) -> None:
    config = VendorConfig(type="openai")

    assert not config.is_limited
    assert buckets_for(KEYS, "openai", config, "gpt-4o", make_request()) == []


def test_vendor_model_and_tenant_limits_each_give_their_buckets(
    make_request: Callable[..., Request],
) -> None:
    config = VendorConfig(
        type="openai",
        rpm=600,
        tpm=60_000,
        tpm_burst=5_000,
        model_limits={"gpt-4o-mini": RateLimit(rpm=30), "gpt-4o*": RateLimit(tpm=6_000)},
        tenant_limit=RateLimit(rpm=120, rpm_burst=4),
    )
    request = make_request(model="gpt-4o", max_tokens=100, user="tenant-a")
    tokens = float(estimated_tokens(request))

    buckets = buckets_for(KEYS, "openai", config, "gpt-4o", request)

    assert buckets == [
        Bucket(KEYS.limit("openai", "rpm"), "rpm", 10.0, 60.0, 1.0),
        Bucket(KEYS.limit("openai", "tpm"), "tpm", 1_000.0, 5_000.0, tokens),
        Bucket(KEYS.model_limit("openai", "gpt-4o*", "tpm"), "tpm", 100.0, 600.0, tokens),
        Bucket(KEYS.tenant_limit("openai", "tenant-a", "rpm"), "rpm", 2.0, 4.0, 1.0),
    ]
    assert tokens > 100  # the prompt's estimate plus max_tokens
    # The exact model name wins over a glob; a request without a user has no tenant bucket.
    anonymous = make_request(model="gpt-4o-mini")
    keys = [b.key for b in buckets_for(KEYS, "openai", config, "gpt-4o-mini", anonymous)]
    assert keys == [
        KEYS.limit("openai", "rpm"),
        KEYS.limit("openai", "tpm"),
        KEYS.model_limit("openai", "gpt-4o-mini", "rpm"),
    ]


def test_tenant_and_model_keys_cannot_address_other_keys() -> None:
    hostile = "x}:job:" + "0" * 32 + " \n*"

    for key in (KEYS.tenant_limit("openai", hostile, "rpm"), KEYS.model_limit("o", hostile, "tpm")):
        assert hostile not in key
        assert key.startswith(f"{PREFIX}:limit:")
        assert " " not in key
        assert "\n" not in key
    assert KEYS.tenant_limit("openai", "a", "rpm") != KEYS.tenant_limit("openai", "b", "rpm")


def test_default_burst_is_a_tenth_of_a_minute_and_at_least_one() -> None:
    assert RateLimit(rpm=600, tpm=90_000).buckets() == [
        ("rpm", 10.0, 60.0),
        ("tpm", 1_500.0, 9_000.0),
    ]
    assert RateLimit(rpm=5).buckets() == [("rpm", 5 / 60.0, 1.0)]


# --- taking ----------------------------------------------------------------------------


def test_a_full_bucket_lets_its_burst_through_then_one_per_refill(
    limiter: RateLimiter, clock: Clock
) -> None:
    bucket = rpm_bucket(rpm=60, burst=3)  # one a second, three at once

    assert [limiter.acquire([bucket]).taken for _ in range(3)] == [True, True, True]
    refused = limiter.acquire([bucket])
    assert (refused.taken, refused.wait_s) == (False, pytest.approx(1.0))

    clock.advance(0.5)
    assert limiter.acquire([bucket]).wait_s == pytest.approx(0.5)
    clock.advance(0.5)
    assert limiter.acquire([bucket]).taken
    assert not limiter.acquire([bucket]).taken


def test_a_caller_whose_clock_is_behind_never_refills_the_same_interval_twice(
    limiter: RateLimiter, clock: Clock
) -> None:
    # Under load, claims reach Redis out of the order their callers read the clock.
    bucket = rpm_bucket(rpm=60, burst=1)  # one a second
    assert limiter.acquire([bucket]).taken
    clock.advance(1.0)
    assert limiter.acquire([bucket]).taken  # the bucket's time is now START_S + 1
    clock.now_s = START_S + 0.5  # a caller that read the clock half a second earlier
    late = limiter.acquire([bucket])
    assert not late.taken
    assert late.wait_s == pytest.approx(1.5), "it waits from the bucket's time, not its own"
    clock.now_s = START_S + 1.5
    assert not limiter.acquire([bucket]).taken, "half a second refilled only half a token"
    clock.now_s = START_S + 2.0
    assert limiter.acquire([bucket]).taken


def test_a_short_bucket_takes_nothing_from_the_others(limiter: RateLimiter) -> None:
    roomy, short = rpm_bucket(rpm=600, burst=10, name="roomy"), rpm_bucket(60, 1, "short")
    assert limiter.acquire([short]).taken

    assert not limiter.acquire([roomy, short]).taken

    # Had the refused call taken from `roomy`, only nine more would fit.
    assert [limiter.acquire([roomy]).taken for _ in range(10)] == [True] * 10


def test_callers_within_the_horizon_are_charged_for_successive_moments(
    limiter: RateLimiter,
) -> None:
    bucket = rpm_bucket(rpm=120, burst=1)  # one every half second
    assert limiter.acquire([bucket]).taken

    waits = [limiter.acquire([bucket], horizon_s=1.2) for _ in range(3)]

    assert [(w.taken, w.wait_s) for w in waits] == [
        (True, pytest.approx(0.5)),
        (True, pytest.approx(1.0)),
        (False, pytest.approx(1.5)),  # past the horizon: not charged, so nothing owed
    ]
    assert limiter.acquire([bucket], horizon_s=1.2).wait_s == pytest.approx(1.5)


def test_a_request_larger_than_the_bucket_waits_for_a_full_one_and_leaves_a_debt(
    limiter: RateLimiter, clock: Clock
) -> None:
    small = tpm_bucket(tpm=600, burst=100, cost=30)  # 10 tokens a second
    big = tpm_bucket(tpm=600, burst=100, cost=250)
    assert limiter.acquire([small]).taken  # 70 left

    assert limiter.acquire([big]).wait_s == pytest.approx(3.0)  # until the bucket is full
    clock.advance(3.0)
    assert limiter.acquire([big]).taken  # 100 - 250 = -150

    assert limiter.acquire([small]).wait_s == pytest.approx(18.0)  # back to 30 tokens


# --- settling and draining -------------------------------------------------------------


def test_settling_gives_back_unused_tokens_and_takes_the_overrun(limiter: RateLimiter) -> None:
    reserved = tpm_bucket(tpm=600, burst=1_000, cost=400)
    probe = tpm_bucket(tpm=600, burst=1_000, cost=1_000)
    assert limiter.acquire([reserved]).taken  # 600 left

    limiter.settle([reserved], used_tokens=100)  # 300 come back: 900
    assert limiter.acquire([probe]).wait_s == pytest.approx(10.0)

    limiter.settle([reserved], used_tokens=700)  # 300 more taken: 600
    assert limiter.acquire([probe]).wait_s == pytest.approx(40.0)

    limiter.settle([reserved], used_tokens=0)  # 400 back, but never past the size
    assert limiter.acquire([probe]).taken


def test_settling_leaves_request_buckets_alone(limiter: RateLimiter) -> None:
    requests = rpm_bucket(rpm=60, burst=1)
    assert limiter.acquire([requests]).taken

    limiter.settle([requests], used_tokens=0)

    assert not limiter.acquire([requests]).taken


# --- advance charges ---------------------------------------------------------------------


def test_a_caller_charged_in_advance_goes_at_its_moment_without_paying_twice(
    limiter: RateLimiter, clock: Clock
) -> None:
    bucket = rpm_bucket(rpm=60, burst=1)
    assert limiter.acquire([bucket]).taken
    second = limiter.acquire([bucket], horizon_s=10)
    third = limiter.acquire([bucket], horizon_s=10)
    assert (second.wait_s, third.wait_s) == (pytest.approx(1.0), pytest.approx(2.0))

    clock.advance(1.0)
    assert limiter.acquire([bucket], paid=True).wait_s == 0.0  # the second goes
    clock.advance(1.0)
    assert limiter.acquire([bucket], paid=True).wait_s == 0.0  # the third goes
    # Both used their charges: a newcomer waits one interval, not three.
    assert limiter.acquire([bucket]).wait_s == pytest.approx(1.0)


def test_a_caller_charged_in_advance_waits_on_when_calls_used_more_than_estimated(
    limiter: RateLimiter, clock: Clock
) -> None:
    tokens = tpm_bucket(tpm=6_000, burst=100, cost=100)  # 100 tokens a second
    assert limiter.acquire([tokens]).taken
    assert limiter.acquire([tokens], horizon_s=10).wait_s == pytest.approx(1.0)

    limiter.settle([tokens], used_tokens=300)  # the first call used 200 more than charged

    clock.advance(1.0)
    late = limiter.acquire([tokens], paid=True)
    assert (late.taken, late.wait_s) == (True, pytest.approx(2.0))  # still charged, later
    clock.advance(2.0)
    assert limiter.acquire([tokens], paid=True).wait_s == 0.0


def test_an_advance_charge_given_back_is_free_for_the_next_caller(
    limiter: RateLimiter,
) -> None:
    bucket = rpm_bucket(rpm=60, burst=1)
    assert limiter.acquire([bucket]).taken
    assert limiter.acquire([bucket], horizon_s=10).wait_s == pytest.approx(1.0)

    limiter.release([bucket])

    assert limiter.acquire([bucket]).wait_s == pytest.approx(1.0)  # not 2.0
