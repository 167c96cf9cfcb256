"""Health checks on a schedule: every vendor probed once per interval, the result in Redis.

Every worker runs a `HealthMonitor` for the vendors it holds, on its event
loop. Each interval, the first worker to take a vendor's turn (a Redis key set
with NX for the interval) probes it (`Vendor.health_check`: a cheap
authenticated request) and records healthy, degraded or unhealthy with the
latency and a detail. A result is kept for three intervals, so a vendor no
worker probes any more goes back to unknown. Producers read the results with
the circuits (at most once a second) and the router leaves unhealthy vendors
out until a probe finds them healthy again.

A probe's detail says what to do: a 401 names the key's variable (`HTTP 401 from
its health check, check OPENAI_API_KEY: ...`). A probe answered 404/405 found no
model list there (many OpenAI-compatible servers have none): health unknown, and
the vendor stays routable; `health_check: call` or `off` chooses another probe.
Each worker logs one WARNING when a vendor's probe starts failing for a reason
an operator must fix (a key, a quota, the configuration), and logs again when
the vendor's state changes; not at every probe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from dispatcher.config.settings import Settings, key_hint
from dispatcher.models import HealthStatus
from dispatcher.state.store import JobStore
from dispatcher.vendors import build_vendor
from dispatcher.vendors.base import Health, Vendor

__all__ = [
    "OPERATOR_PROBLEMS",
    "RESULT_LIFETIME_INTERVALS",
    "HealthMonitor",
    "explained",
    "probe",
    "probe_now",
]

log = logging.getLogger(__name__)

# A result outlives its interval this many times: one missed probe is not an outage.
RESULT_LIFETIME_INTERVALS = 3
# Probe failures only an operator can fix: worth a WARNING in the worker's log.
OPERATOR_PROBLEMS = frozenset({"auth", "quota", "invalid_request", "config", "no_model_list"})


class HealthMonitor:
    """Probes vendors whose turn it is and records what it found."""

    def __init__(self, store: JobStore, vendors: Mapping[str, Vendor], interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be greater than 0, not {interval_s!r}")
        self.store = store
        self.vendors = vendors
        self.interval_s = interval_s
        # What this worker last saw of each vendor: (status, problem), to log changes only.
        self._seen: dict[str, tuple[HealthStatus, str]] = {}

    async def check_due(self) -> dict[str, Health]:
        """Probe, at once, every vendor no other worker probed this interval; what was found."""
        due = [
            name
            for name in self.vendors
            if await asyncio.to_thread(self.store.health.take_turn, name, self.interval_s)
        ]
        results = await asyncio.gather(*(probe(name, self.vendors[name]) for name in due))
        found = dict(zip(due, results, strict=True))
        for name, health in found.items():
            self._log_change(name, health)
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

    def _log_change(self, name: str, health: Health) -> None:
        previous = self._seen.get(name)
        self._seen[name] = (health.status, health.problem)
        if previous == (health.status, health.problem):
            return
        if health.problem in OPERATOR_PROBLEMS:
            log.warning("vendor %s: %s: %s", name, health.status.value, health.detail)
        elif previous is not None:
            level = logging.INFO if health.status is HealthStatus.HEALTHY else logging.WARNING
            detail = f": {health.detail}" if health.detail else ""
            log.log(level, "vendor %s is %s now%s", name, health.status.value, detail)


async def probe(name: str, vendor: Vendor) -> Health:
    """Probe `vendor` once, within its timeout; a failure reads as unhealthy, never raises."""
    try:
        health = await asyncio.wait_for(vendor.health_check(), vendor.config.timeout)
    except TimeoutError:
        detail = f"no answer to the health check within {vendor.config.timeout:g} s"
        health = Health(status=HealthStatus.UNHEALTHY, problem="timeout", detail=detail)
    except Exception as exc:  # a vendor client's bug reads as unhealthy, not a crash
        detail = f"health check failed: {type(exc).__name__}"
        health = Health(status=HealthStatus.UNHEALTHY, problem="error", detail=detail)
    return explained(name, health)


def explained(name: str, health: Health) -> Health:
    """`health` with a detail an operator can act on: the HTTP status, the key to check."""
    if health.status_code is None or health.problem == "no_model_list":
        return health
    said = f"HTTP {health.status_code} from its health check"
    if health.problem == "auth":
        said += f", check {key_hint(name)}"
    detail = f"{said}: {health.detail}" if health.detail else said
    return health.model_copy(update={"detail": detail})


async def probe_now(settings: Settings, names: Iterable[str]) -> dict[str, Health]:
    """Probe each named vendor once, now, each through a client of its own (closed after).

    For `llmdispatch health check` and `config check --ping`: no worker is needed.
    """
    vendors = {name: build_vendor(name, settings.vendors[name]) for name in names}
    try:
        results = await asyncio.gather(*(probe(name, v) for name, v in vendors.items()))
    finally:
        await asyncio.gather(*(v.aclose() for v in vendors.values()), return_exceptions=True)
    return dict(zip(vendors, results, strict=True))
