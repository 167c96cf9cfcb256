"""Each vendor's live status: the seed's provider dashboard, assembled from Redis.

Health (the workers' last probe), circuit state, messages waiting in the
vendor's queue, calls running on it, its totals from the statistics, and its
traffic over the last minute against its configured limits.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from dispatcher.config.settings import Settings
from dispatcher.models import CircuitState, HealthStatus, StrictModel
from dispatcher.routing.router import queue_for
from dispatcher.state.store import JobStore
from dispatcher.state.traffic import running_since

__all__ = ["VendorStatus", "vendor_status"]


class VendorStatus(StrictModel):
    """One vendor as the dispatcher sees it now."""

    name: str
    type: str
    health: HealthStatus = HealthStatus.UNKNOWN
    health_detail: str = ""
    health_latency_ms: float | None = None
    health_checked_at: datetime | None = None
    circuit: CircuitState = CircuitState.CLOSED
    queue_depth: int = Field(
        default=0, ge=0, description="Jobs waiting in llm.<vendor>: its ready set and its messages."
    )
    in_flight: int = Field(default=0, ge=0, description="Jobs running on it now.")
    requests: int = Field(default=0, ge=0, description="Jobs that ended on it, ever.")
    errors: int = Field(default=0, ge=0, description="Of those, the failed ones.")
    avg_latency_ms: float = Field(default=0.0, ge=0.0)
    requests_per_minute: float = Field(default=0.0, ge=0.0, description="Over the last minute.")
    tokens_per_minute: float = Field(default=0.0, ge=0.0, description="Over the last minute.")
    rpm_limit: int | None = None
    tpm_limit: int | None = None


def vendor_status(store: JobStore, settings: Settings) -> list[VendorStatus]:
    """The status of every enabled vendor, by name."""
    vendors = settings.enabled_vendors()
    names = sorted(vendors)
    health = store.health.latest(names)
    breaker = settings.circuit_breaker
    circuits = store.circuits.states(names, breaker.reset_timeout_s) if breaker.enabled else {}
    stats = store.stats().vendor_stats
    found = []
    for name in names:
        config = vendors[name]
        since = running_since(config.timeout, store.now())
        activity = store.traffic.activity(name, queue_for(name), since)
        probe = health.get(name)
        totals = stats.get(name)
        found.append(
            VendorStatus(
                name=name,
                type=config.type,
                health=probe.status if probe else HealthStatus.UNKNOWN,
                health_detail=probe.detail if probe else "",
                health_latency_ms=probe.latency_ms if probe else None,
                health_checked_at=probe.checked_at if probe else None,
                circuit=circuits[name].state if name in circuits else CircuitState.CLOSED,
                queue_depth=activity.queue_depth,
                in_flight=activity.in_flight,
                requests=totals.requests if totals else 0,
                errors=totals.failures if totals else 0,
                avg_latency_ms=totals.avg_latency_ms if totals else 0.0,
                requests_per_minute=activity.requests_per_minute,
                tokens_per_minute=activity.tokens_per_minute,
                rpm_limit=config.rpm,
                tpm_limit=config.tpm,
            )
        )
    return found
