"""Riding out a Redis outage inside a worker: wait until it answers, then run the step again.

A worker's message touches Redis many times (claim, the job's events, the
result, the batch's next message). If Redis stops answering in the middle,
say while it restarts, letting the exception out would count the message as
done and lose its jobs: its acknowledgement goes through once the worker
reconnects. Instead the task waits for Redis to answer again and runs the
message once more, as a redelivered copy. That is safe because every step is
idempotent: a job that ended is skipped (compare-and-set end), a running job
is taken over by the same attempt, a retry's new message is sent before the
store moves on. A vendor call cut short by the outage may be made twice; its
result is written once.

The wait is bounded (`give_up_after_s`); past it the error goes out as
before, and the message comes back after the visibility timeout if its
acknowledgement could not be sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import redis

__all__ = ["REDIS_UNREACHABLE", "OutagePolicy", "through_outages"]

logger = logging.getLogger(__name__)

# What redis-py raises when the server is down, restarting, loading its data or out of reach.
REDIS_UNREACHABLE: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError)

T = TypeVar("T")


@dataclass(frozen=True)
class OutagePolicy:
    """How long to wait for Redis to answer again, and how often to ask."""

    give_up_after_s: float = 300.0
    max_repeats: int = 20
    first_probe_s: float = 0.1
    longest_probe_s: float = 2.0
    unreachable: tuple[type[BaseException], ...] = REDIS_UNREACHABLE
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)


def through_outages(
    run: Callable[[bool], T], reachable: Callable[[], bool], policy: OutagePolicy
) -> T:
    """`run(False)`; after each outage it hits, wait for `reachable()`, then `run(True)`.

    `run`'s argument says whether it is a repeat, so that it treats the work as
    a redelivered message. An outage that lasts past `policy.give_up_after_s`,
    or more than `policy.max_repeats` of them, lets the last error out.
    """
    repeats = 0
    while True:
        try:
            return run(repeats > 0)
        except policy.unreachable as exc:
            outage_began = policy.clock()
            if repeats >= policy.max_repeats:
                raise
            logger.warning("Redis stopped answering (%s); waiting to run the step again", exc)
            if not _wait_until_reachable(reachable, policy, outage_began):
                raise
            logger.warning("Redis answers again after %.1f s", policy.clock() - outage_began)
            repeats += 1


def _wait_until_reachable(
    reachable: Callable[[], bool], policy: OutagePolicy, outage_began: float
) -> bool:
    pause = policy.first_probe_s
    while policy.clock() - outage_began < policy.give_up_after_s:
        try:
            if reachable():
                return True
        except policy.unreachable:
            pass
        policy.sleep(pause)
        pause = min(policy.longest_probe_s, pause * 2)
    return False
