"""Health checks on a schedule: every vendor probed once per interval, the result in Redis.

Every worker runs a `HealthMonitor` for the vendors it holds, on its event
loop. Each interval, the first worker to take a vendor's turn (a Redis key set
with NX for the interval) probes it (`Vendor.health_check`: a cheap
authenticated request) and records healthy, degraded or unhealthy with the
latency and a detail. A result is kept for three intervals, so a vendor no
worker probes any more goes back to unknown. Producers read the results with
the circuits (at most once a second) and the router leaves unhealthy vendors
out until a probe finds them healthy again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from dispatcher.models import HealthStatus
from dispatcher.store import JobStore
from dispatcher.vendors.base import Health, Vendor

__all__ = ["RESULT_LIFETIME_INTERVALS", "HealthMonitor"]

log = logging.getLogger(__name__)

# A result outlives its interval this many times: one missed probe is not an outage.
RESULT_LIFETIME_INTERVALS = 3


class HealthMonitor:
    """Probes vendors whose turn it is and records what it found."""

    def __init__(self, store: JobStore, vendors: Mapping[str, Vendor], interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be greater than 0, not {interval_s!r}")
        self.store = store
        self.vendors = vendors
        self.interval_s = interval_s

    async def check_due(self) -> dict[str, Health]:
        """Probe, at once, every vendor no other worker probed this interval; what was found."""
        due = [
            name
            for name in self.vendors
            if await asyncio.to_thread(self.store.health.take_turn, name, self.interval_s)
        ]
        results = await asyncio.gather(*(self._probe(name) for name in due))
        found = dict(zip(due, results, strict=True))
        for name, health in found.items():
            await asyncio.to_thread(
                self.store.health.save,
                name,
                health,
                self.interval_s * RESULT_LIFETIME_INTERVALS,
            )
        return found

    async def run_forever(self) -> None:
        """Check every interval until cancelled; a failed round is logged, not fatal."""
        while True:
            try:
                await self.check_due()
            except Exception:  # Redis away for a moment: try again next interval
                log.warning("health checks failed this round", exc_info=True)
            await asyncio.sleep(self.interval_s)

    async def _probe(self, name: str) -> Health:
        vendor = self.vendors[name]
        try:
            return await asyncio.wait_for(vendor.health_check(), vendor.config.timeout)
        except TimeoutError:
            detail = f"no answer to the health check within {vendor.config.timeout:g} s"
            return Health(status=HealthStatus.UNHEALTHY, detail=detail)
        except Exception as exc:  # a vendor client's bug reads as unhealthy, not a crash
            detail = f"health check failed: {type(exc).__name__}"
            return Health(status=HealthStatus.UNHEALTHY, detail=detail)
