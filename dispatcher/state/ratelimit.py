"""Rate limits shared by every worker: token buckets in Redis, per vendor, model and tenant.

A vendor's `rpm` / `tpm` (with `rpm_burst` / `tpm_burst`), each of its
`model_limits` (the first pattern matching the deployment's model) and its
`tenant_limit` (one pair of buckets per request `user`) each become token
buckets. A job takes one request and its estimated tokens (prompt estimate +
`max_tokens`) from every bucket that applies, in one atomic Lua step inside
the job's claim (`JobStore.claim`), so the limit holds across every worker
process and host, unlike Celery's per-worker `rate_limit`.

A job that finds a bucket short is not run and holds no worker slot: it is
charged in advance for the moment the buckets will have refilled (within a
horizon) and rescheduled for that moment, so waiting jobs line up one behind
the other instead of all waking at once. After the call the reservation is
settled with the tokens the vendor reported (`settle`). A 429's Retry-After
blocks only the deployment that got it (`dispatcher.state.blocks`) and leaves the
buckets alone: the vendor's other models keep their share of its limits.

Requests without a `user` are not subject to tenant limits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from dispatcher.config.schema import RateLimit, VendorConfig
from dispatcher.models import Request
from dispatcher.routing.pricing import estimate_completion_tokens, estimate_prompt_tokens
from dispatcher.state.keys import Keys
from dispatcher.state.scripts import ACQUIRE, ADJUST, RELEASE
from dispatcher.state.store import Bucket

__all__ = ["Acquired", "RateLimiter", "buckets_for", "estimated_tokens"]


def estimated_tokens(request: Request) -> int:
    """What a request is charged against token limits before the vendor reports its usage."""
    return estimate_prompt_tokens(request) + estimate_completion_tokens(request)


def buckets_for(
    keys: Keys,
    vendor: str,
    config: VendorConfig,
    model: str,
    request: Request,
) -> list[Bucket]:
    """Every bucket a call of `model` on `vendor` for `request` takes from; empty: unlimited."""
    tokens = float(estimated_tokens(request))
    found: list[Bucket] = []

    def add(limit: RateLimit, key_of: Callable[[str], str]) -> None:
        for kind, rate, size in limit.buckets():
            cost = 1.0 if kind == "rpm" else tokens
            found.append(Bucket(key_of(kind), kind, rate, size, cost))

    add(config.limit, lambda kind: keys.limit(vendor, kind))
    matched = config.model_limit_for(model)
    if matched is not None:
        pattern, limit = matched
        add(limit, lambda kind: keys.model_limit(vendor, pattern, kind))
    if config.tenant_limit is not None and request.user:
        user = request.user
        add(config.tenant_limit, lambda kind: keys.tenant_limit(vendor, user, kind))
    return found


@dataclass(frozen=True, slots=True)
class Acquired:
    """The answer of `RateLimiter.acquire`: taken now, taken for later, or not taken."""

    wait_s: float
    taken: bool


class RateLimiter:
    """Takes from and settles shared buckets; the claim takes them for jobs."""

    def __init__(self, client: redis.Redis, *, now: Callable[[], float] = time.time) -> None:
        self.now = now
        self._acquire = client.register_script(ACQUIRE)
        self._adjust = client.register_script(ADJUST)
        self._release = client.register_script(RELEASE)

    def acquire(
        self, buckets: Sequence[Bucket], horizon_s: float = 0.0, *, paid: bool = False
    ) -> Acquired:
        """Take every bucket's cost, atomically: now, or in advance within `horizon_s`.

        `paid`: the caller was charged in advance by an earlier `acquire`; it goes
        when its moment has come, and waits on (still charged) when calls used more
        tokens than estimated meanwhile.
        """
        if not buckets:
            return Acquired(0.0, True)
        wait, taken = self._acquire(
            keys=[b.key for b in buckets],
            args=[
                repr(self.now()),
                repr(max(0.0, horizon_s)),
                "1" if paid else "0",
                *_triples(buckets, None),
            ],
        )
        return Acquired(float(wait), _flag(taken))

    def release(self, buckets: Sequence[Bucket]) -> None:
        """Give back an advance charge that will not be used."""
        if buckets:
            self._release(
                keys=[b.key for b in buckets], args=[repr(self.now()), *_triples(buckets, None)]
            )

    def settle(self, buckets: Sequence[Bucket], used_tokens: float) -> None:
        """Correct the token buckets of a reservation by what the call really used."""
        token_buckets = [b for b in buckets if b.kind == "tpm"]
        if token_buckets:
            self._adjust(
                keys=[b.key for b in token_buckets],
                args=[repr(self.now()), *_triples(token_buckets, lambda b: used_tokens - b.cost)],
            )


def _triples(buckets: Sequence[Bucket], amount: Callable[[Bucket], float] | None) -> list[str]:
    args: list[str] = []
    for bucket in buckets:
        cost = bucket.cost if amount is None else amount(bucket)
        args += [repr(bucket.rate_per_s), repr(bucket.size), repr(cost)]
    return args


def _flag(value: object) -> bool:
    return (value.decode() if isinstance(value, bytes) else str(value)) == "1"
