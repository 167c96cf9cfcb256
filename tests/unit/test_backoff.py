"""Backoff maths: the delay before each retry under each strategy."""

from __future__ import annotations

import random

import pytest

from dispatcher import RetryPolicy
from dispatcher.routing.backoff import JITTER_FRACTION, backoff_delay_s, retry_delay_s


def _policy(backoff: str, **overrides: float) -> RetryPolicy:
    fields = {"backoff": backoff, "initial_delay_s": 0.5, "max_delay_s": 8.0, **overrides}
    return RetryPolicy.model_validate(fields)


def test_fixed_backoff_waits_the_same_every_time() -> None:
    assert [backoff_delay_s(_policy("fixed"), n) for n in (1, 2, 5)] == [0.5, 0.5, 0.5]


def test_linear_backoff_grows_by_the_initial_delay() -> None:
    assert [backoff_delay_s(_policy("linear"), n) for n in (1, 2, 3)] == [0.5, 1.0, 1.5]


def test_exponential_backoff_doubles_and_is_capped() -> None:
    delays = [backoff_delay_s(_policy("exponential"), n) for n in range(1, 7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_exponential_backoff_uses_the_configured_multiplier() -> None:
    policy = _policy("exponential", multiplier=3.0, max_delay_s=100.0)
    assert [backoff_delay_s(policy, n) for n in (1, 2, 3)] == [0.5, 1.5, 4.5]


def test_jitter_takes_off_at_most_a_quarter_of_the_exponential_delay() -> None:
    policy = _policy("jitter")
    rng = random.Random(7)
    for retry in range(1, 8):
        ceiling = min(0.5 * 2 ** (retry - 1), 8.0)
        for _ in range(50):
            delay = backoff_delay_s(policy, retry, rng)
            assert ceiling * (1 - JITTER_FRACTION) <= delay <= ceiling


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    policy = _policy("jitter")
    first = [backoff_delay_s(policy, 3, random.Random(1)) for _ in range(3)]
    assert first == [backoff_delay_s(policy, 3, random.Random(1)) for _ in range(3)]


def test_a_huge_retry_number_stays_at_the_cap() -> None:
    assert backoff_delay_s(_policy("exponential", multiplier=10.0), 100) == 8.0


def test_retry_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="retry_number"):
        backoff_delay_s(_policy("fixed"), 0)


def test_a_longer_retry_after_wins_over_the_backoff() -> None:
    assert retry_delay_s(_policy("fixed"), 1, retry_after_s=2.0) == 2.0
    assert retry_delay_s(_policy("fixed"), 1, retry_after_s=0.1) == 0.5
    assert retry_delay_s(_policy("fixed"), 1) == 0.5
