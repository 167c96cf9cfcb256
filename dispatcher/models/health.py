"""How a vendor is doing, as every worker and producer sees it: its health and its circuit."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CircuitState", "HealthStatus"]


class HealthStatus(StrEnum):
    """A vendor's health, from its last probe."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class CircuitState(StrEnum):
    """A vendor's shared circuit breaker state."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
