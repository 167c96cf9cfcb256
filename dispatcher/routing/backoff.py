"""How long to wait before retry number N, by the configured `RetryPolicy`.

- fixed: `initial_delay_s` every time (the seed design's "linear" backoff);
- linear: `initial_delay_s * N`;
- exponential: `initial_delay_s * multiplier ** (N - 1)`;
- jitter: exponential, less a random part of up to 25 %, as the official OpenAI
  and Anthropic SDKs do, so that many clients retrying together spread out.

Every strategy is capped at `max_delay_s`. A vendor's own Retry-After, when
larger, wins over the computed delay (see `retry_delay_s`).
"""

from __future__ import annotations

import random

from dispatcher.config.policies import BackoffStrategy, RetryPolicy

__all__ = ["JITTER_FRACTION", "backoff_delay_s", "retry_delay_s"]

# The SDKs take off up to a quarter of the delay.
JITTER_FRACTION = 0.25


def backoff_delay_s(
    policy: RetryPolicy, retry_number: int, rng: random.Random | None = None
) -> float:
    """The wait before retry `retry_number` (1 is the first retry), in seconds."""
    if retry_number < 1:
        raise ValueError(f"retry_number must be at least 1, got {retry_number}")
    if policy.backoff is BackoffStrategy.FIXED:
        delay = policy.initial_delay_s
    elif policy.backoff is BackoffStrategy.LINEAR:
        delay = policy.initial_delay_s * retry_number
    else:
        delay = policy.initial_delay_s * policy.multiplier ** (retry_number - 1)
    delay = min(delay, policy.max_delay_s)
    if policy.backoff is BackoffStrategy.JITTER:
        rng = rng or random.Random()
        delay *= 1.0 - JITTER_FRACTION * rng.random()
    return delay


def retry_delay_s(
    policy: RetryPolicy,
    retry_number: int,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """The wait before a retry: our backoff, or the vendor's Retry-After when longer."""
    delay = backoff_delay_s(policy, retry_number, rng)
    return max(delay, retry_after_s) if retry_after_s is not None else delay
