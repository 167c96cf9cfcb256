"""The health checks' results in Redis: whose turn it is to probe, and what each probe found.

`HealthMonitor` (`dispatcher.runner.health`) writes them; producers and `vendor_status` read them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis

from dispatcher.vendors.base import Health

if TYPE_CHECKING:
    from dispatcher.state.keys import Keys

__all__ = ["HealthRecords"]


class HealthRecords:
    """Each vendor's last health check, and the turn to take the next one."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def take_turn(self, vendor: str, interval_s: float) -> bool:
        """True for the one caller that should probe `vendor` in this interval."""
        ttl_ms = max(1, int(interval_s * 1000))
        return bool(self.redis.set(self.keys.health_turn(vendor), "1", nx=True, px=ttl_ms))

    def save(self, vendor: str, health: Health, ttl_s: float) -> None:
        """Record a probe's result; it is forgotten (unknown health) after `ttl_s`."""
        ttl_ms = max(1, int(ttl_s * 1000))
        self.redis.set(self.keys.health(vendor), health.model_dump_json(), px=ttl_ms)

    def latest(self, vendors: list[str]) -> dict[str, Health]:
        """The last health check of each of `vendors` that has a recent one."""
        if not vendors:
            return {}
        values = self.redis.mget([self.keys.health(v) for v in vendors])
        return {
            vendor: Health.model_validate_json(value)
            for vendor, value in zip(vendors, values, strict=True)
            if value is not None
        }
