"""Retry-After blocks shared by every worker: one per deployment (a vendor and a model).

A vendor that answers a call 429 with Retry-After asks us to wait before calling
that model again. The wait holds for every worker, but only for the deployment
that was told, so one model's limit never stalls the vendor's other models. Each
vendor has one hash (`Keys.blocks`): model -> the epoch second its block ends.

- A block ends at the latest of the Retry-Afters it was given, each counted from
  the moment it came (`block`): a shorter one never shortens a block, and many
  429s at once never add up to more than the longest wait any of them asked for.
- A claim for a blocked deployment is refused with the block's end (the CLAIM
  script reads the model of the message's deployment from the job's route, only
  while the vendor has a block); the runner sends the job to a deployment of its
  route that may be called, or has it wait, once, for the first to recover.
- Blocks need no clearing: an ended one is ignored, dropped by the next block of
  that vendor, and the hash expires with its longest block.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import redis

from dispatcher.models import Deployment
from dispatcher.state.scripts import BLOCK

if TYPE_CHECKING:
    from dispatcher.state.keys import Keys

__all__ = ["DeploymentBlocks"]


class DeploymentBlocks:
    """Sets and reads the deployments' Retry-After blocks."""

    def __init__(
        self, client: redis.Redis, keys: Keys, *, now: Callable[[], float] = time.time
    ) -> None:
        self.redis = client
        self.keys = keys
        self.now = now
        self._block = client.register_script(BLOCK)

    def block(self, vendor: str, model: str, seconds: float) -> bool:
        """Block `model` on `vendor` for `seconds` from now (its Retry-After), for everyone.

        Atomic: a block already standing that ends later is kept. True when this set
        or lengthened the block.
        """
        if seconds <= 0:
            return False
        now = self.now()
        keys = [self.keys.blocks(vendor)]
        return bool(self._block(keys=keys, args=[model, repr(now + seconds), repr(now)]))

    def until(self, deployments: Sequence[Deployment]) -> dict[Deployment, float]:
        """The deployments among `deployments` blocked now, with when each may be called."""
        if not deployments:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for deployment in deployments:
            pipe.hget(self.keys.blocks(deployment.vendor), deployment.model)
        now = self.now()
        return {
            deployment: float(value)
            for deployment, value in zip(deployments, pipe.execute(), strict=True)
            if value is not None and float(value) > now
        }
