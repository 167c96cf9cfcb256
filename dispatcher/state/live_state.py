"""What a producer routes by: every vendor's circuit, health and, when asked, load and latency.

Read from the state the workers share (`dispatcher.state.circuit`,
`health_records`, `traffic`) into the router's `LiveState`, in a few round trips.
"""

from __future__ import annotations

from dispatcher.config.settings import Settings
from dispatcher.models import CircuitState, HealthStatus
from dispatcher.routing.router import LiveState, VendorState, queue_for
from dispatcher.state.store import JobStore
from dispatcher.state.traffic import Load, running_since

__all__ = ["read_live_state"]


def read_live_state(store: JobStore, settings: Settings) -> LiveState:
    """Every enabled vendor's circuit, health and (when routing uses them) load and latency;
    vendors with nothing known are left out (the router takes them as healthy and closed)."""
    vendors = settings.enabled_vendors()
    names = list(vendors)
    breaker = settings.circuit_breaker
    circuits = store.circuits.states(names, breaker.reset_timeout_s) if breaker.enabled else {}
    health = store.health.latest(names)
    loads: dict[str, Load] = {}
    if settings.least_busy.enabled or settings.latency_optimization.enabled:
        queues = {name: queue_for(name) for name in names}
        now = store.now()
        since = {name: running_since(vendors[name].timeout, now) for name in names}
        loads = store.traffic.loads(queues, since)
    states = {}
    for name in names:
        if name not in circuits and name not in health and name not in loads:
            continue
        load = loads.get(name)
        states[name] = VendorState(
            health=health[name].status if name in health else HealthStatus.UNKNOWN,
            health_detail=health[name].detail if name in health else "",
            circuit=circuits[name].state if name in circuits else CircuitState.CLOSED,
            latency_ms=load.latency_ms if load else None,
            in_flight=load.in_flight if load else 0,
            queue_depth=load.queue_depth if load else 0,
        )
    return LiveState(vendors=states)
