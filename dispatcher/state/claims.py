"""What a claim asks of the job store and what it answers: `ClaimOrder`, `Claim`, `Bucket`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from dispatcher.models import JobRecord

if TYPE_CHECKING:
    from dispatcher.state.circuit import CircuitCheck

__all__ = ["Bucket", "Claim", "ClaimOrder", "StartResult"]

StartResult = Literal[
    "ok", "missing", "terminal", "stale", "late", "blocked", "open", "limited", "busy"
]


@dataclass(frozen=True)
class Bucket:
    """A shared token bucket to take `cost` from: refilled at `rate_per_s` up to `size`.

    `kind` is "rpm" (a request costs 1) or "tpm" (a request costs its tokens).
    """

    key: str
    kind: Literal["rpm", "tpm"]
    rate_per_s: float
    size: float
    cost: float


@dataclass(frozen=True)
class ClaimOrder:
    """What `JobStore.claim` takes: message `attempt` of `job_id` on `vendor`, and how.

    `deployment`: the message's deployment (its index in the job's route), whose
    block, if any, holds the job back.
    """

    job_id: str
    attempt: int
    vendor: str
    buckets: tuple[Bucket, ...] = ()
    horizon_s: float = 0.0
    circuit: CircuitCheck | None = None
    batch_id: str = ""
    exclusive: bool = False
    deployment: int = 0


@dataclass(frozen=True)
class Claim:
    """What `JobStore.claim` found: its verdict, the job, and what holds it back.

    `blocked_until`: for "blocked", the time the deployment may be called again.
    `wait_s` and `reserved`: for "limited", how long until the buckets hold
    enough, and whether they were charged already (the job's next message then
    runs without taking again).
    """

    verdict: StartResult
    record: JobRecord | None = None
    blocked_until: float | None = None
    wait_s: float = 0.0
    reserved: bool = False
