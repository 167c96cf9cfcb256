"""Circuit breakers shared by every worker: one per vendor, in Redis.

A vendor's circuit is a hash (`Keys.circuit`) that is absent while it is
closed. Failed calls (5xx, 529, timeouts, broken streams) count in a row
(`trip`); at the threshold the circuit opens. Claims refuse an open vendor
until `reset_timeout_s` has passed since it opened; then the first claim is
the one half-open probe (the claim script marks it, with `probe_until`), and
the others are refused while it is under way. A successful call closes the
circuit inside the job's FINISH script; a failed probe opens it again.

| from      | event                                      | to                           |
| --------- | ------------------------------------------ | ---------------------------- |
| closed    | failed call, below the threshold           | closed, one more failure     |
| closed    | failed call reaching the threshold         | open                         |
| any       | successful call                            | closed                       |
| open      | first claim after the reset timeout        | half-open (this is the probe)|
| half-open | the probe fails                            | open, for another timeout    |
| half-open | no report by `probe_until` (worker died)   | the next claim is the probe  |
| any       | an operator's reset (`reset`)              | closed, no failures counted  |

A reset deletes the hash in one command, so every worker's next claim and every
producer's next read of the circuits sees it closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from dispatcher.models import CircuitState
from dispatcher.state.scripts import TRIP

if TYPE_CHECKING:
    from dispatcher.state.keys import Keys

__all__ = ["CircuitCheck", "CircuitView", "Circuits"]


@dataclass(frozen=True)
class CircuitCheck:
    """What a claim needs to honour the vendor's circuit: how long it stays open, and
    how long the one probe call may take before another may try."""

    reset_timeout_s: float
    probe_timeout_s: float


@dataclass(frozen=True)
class CircuitView:
    """A circuit as callers see it now: open until `until`, or half-open (a probe may go)."""

    state: CircuitState
    until: float


class Circuits:
    """Counts failures against vendors' circuits and reads their states."""

    def __init__(
        self, client: redis.Redis, keys: Keys, *, now: Callable[[], float] = time.time
    ) -> None:
        self.redis = client
        self.keys = keys
        self.now = now
        self._trip = client.register_script(TRIP)

    def trip(self, vendor: str, failure_threshold: int, keep_s: int) -> str:
        """Count a failed call against `vendor`'s circuit; the state it is left in."""
        state = self._trip(
            keys=[self.keys.circuit(vendor)],
            args=[repr(self.now()), failure_threshold, max(1, keep_s)],
        )
        return state.decode() if isinstance(state, bytes) else str(state)

    def states(self, vendors: list[str], reset_timeout_s: float) -> dict[str, CircuitView]:
        """The circuits among `vendors` that are not closed, as callers should see them now."""
        if not vendors:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for vendor in vendors:
            pipe.hmget(self.keys.circuit(vendor), *_FIELDS)
        now = self.now()
        found: dict[str, CircuitView] = {}
        for vendor, fields in zip(vendors, pipe.execute(), strict=True):
            view = _view(fields, now, reset_timeout_s)
            if view is not None:
                found[vendor] = view
        return found

    def reset(self, vendor: str, reset_timeout_s: float) -> CircuitState:
        """Close `vendor`'s circuit and forget its failures; the state it was in.

        One MULTI/EXEC reads and deletes the circuit, so a failure counted meanwhile
        is either cleared with it or counted afresh afterwards, never half of each.
        """
        pipe = self.redis.pipeline(transaction=True)
        pipe.hmget(self.keys.circuit(vendor), *_FIELDS)
        pipe.delete(self.keys.circuit(vendor))
        fields, _ = pipe.execute()
        view = _view(fields, self.now(), reset_timeout_s)
        return view.state if view is not None else CircuitState.CLOSED


# The circuit hash's fields a reader needs, in the order `_view` takes them.
_FIELDS = ("state", "opened_at", "probe_until")


def _view(fields: list[Any], now: float, reset_timeout_s: float) -> CircuitView | None:
    """A circuit as callers see it at `now`, from its `_FIELDS`; None while it is closed."""
    state, opened, probing = fields
    if state is None:
        return None  # absent, or closed and counting failures
    reopen = float(opened or 0) + reset_timeout_s
    busy = float(probing or 0)
    if now < reopen:
        return CircuitView(CircuitState.OPEN, reopen)
    if now < busy:
        return CircuitView(CircuitState.OPEN, busy)  # its probe is under way
    return CircuitView(CircuitState.HALF_OPEN, now)
