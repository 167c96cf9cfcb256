"""Picks where a request runs: a pure function of (request, settings, live state, rng).

Candidates are the request's model group, in order, or else every configured
vendor that serves the model. A candidate is left out, with its reason kept
for the error, when its vendor is unknown, disabled, does not serve the model,
is unhealthy (with the health check's own words) or circuit-open, or is over
the cost or latency maximum. A stand-in vendor (type `mock`, or `stand_in:
true`, such as the mock server) is a candidate only when it is named (the
request's `vendor` or `vendor_weights`, a matching routing rule, the model
group, `default_vendor` or `fallback_vendor`) or when no real vendor is enabled
at all: a stand-in never answers a real vendor's traffic.

The primary deployment is the first of these that applies:

1. the request's preferred `vendor`;
2. the request's own `vendor_weights` (a weighted draw among the vendors named);
3. the first matching enabled routing rule, highest priority first;
4. cost and/or latency optimisation, when enabled (cheapest, then fastest);
5. the configured `default_vendor`;
6. a model group's first member, or else a weighted draw among the best tier
   (highest vendor priority, healthy before degraded) by configured weights.

Fallbacks are only what the configuration names: the `fallback_vendor` first
(when it can take the request), then the model group's other deployments in
the group's order (or the optimisations' order). Another vendor that merely
serves the model is never a fallback. A request with `allow_fallback=False`
gets none. Draws use the `rng` passed in, so a seeded `random.Random` makes
routing reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydantic import ConfigDict, Field

from dispatcher.config.schema import VendorConfig
from dispatcher.config.settings import Settings
from dispatcher.errors import BudgetExceeded, NoRoute
from dispatcher.models import (
    CircuitState,
    Deployment,
    HealthStatus,
    Request,
    Route,
    StrictModel,
)
from dispatcher.routing.capabilities import Capability, missing, needs
from dispatcher.routing.matching import condition_matches, serves
from dispatcher.routing.pricing import (
    estimate_completion_tokens,
    estimate_prompt_tokens,
    price_for,
)

__all__ = [
    "BATCH_LANE_SUFFIX",
    "QUEUE_PREFIX",
    "LiveState",
    "VendorState",
    "batch_queue_for",
    "queue_for",
    "route",
    "vendor_queues",
]

QUEUE_PREFIX = "llm."
# Batch items wait in a lane of their own, `llm.<vendor>.batch`, so an interactive
# job never queues behind thousands of them (see `batch_queue_for`).
BATCH_LANE_SUFFIX = ".batch"

T = TypeVar("T")


def queue_for(vendor: str, *, batch: bool = False) -> str:
    """The Celery queue a vendor's jobs wait in: its interactive lane, or its batch lane."""
    return batch_queue_for(vendor) if batch else f"{QUEUE_PREFIX}{vendor}"


def vendor_of_queue(queue: str) -> str:
    """The vendor whose interactive lane `queue` is (`queue_for`'s inverse)."""
    return queue.removeprefix(QUEUE_PREFIX)


def batch_queue_for(vendor: str) -> str:
    """The queue of a vendor's batch items, `llm.<vendor>.batch`.

    Two queues rather than Celery's emulated priorities: a worker consuming both
    takes from them in turn (kombu's Redis transport rotates the queues it polls),
    so an interactive message waits for at most one batch message, whatever the
    batch backlog, and prefetched messages are never stuck behind a priority
    they cannot overtake.
    """
    return f"{QUEUE_PREFIX}{vendor}{BATCH_LANE_SUFFIX}"


def vendor_queues(vendor: str) -> list[str]:
    """Every queue a worker for `vendor` consumes: the interactive lane, then the batch lane."""
    return [queue_for(vendor), batch_queue_for(vendor)]


class VendorState(StrictModel):
    """What is known right now about one vendor (from health checks, breakers, stats)."""

    model_config = ConfigDict(frozen=True)

    health: HealthStatus = HealthStatus.UNKNOWN
    health_detail: str = Field(default="", description="What its last health check found.")
    circuit: CircuitState = CircuitState.CLOSED
    latency_ms: float | None = Field(default=None, ge=0.0, description="Moving average.")
    in_flight: int = Field(default=0, ge=0)
    queue_depth: int = Field(default=0, ge=0)


class LiveState(StrictModel):
    """A snapshot of every vendor's state; vendors not listed are assumed fine."""

    model_config = ConfigDict(frozen=True)

    vendors: dict[str, VendorState] = Field(default_factory=dict)

    def of(self, vendor: str) -> VendorState:
        """The state of `vendor`, or the default (unknown health, circuit closed)."""
        return self.vendors.get(vendor, _UNKNOWN)


_UNKNOWN = VendorState()
_NO_STATE = LiveState()


@dataclass(frozen=True)
class _Candidate:
    deployment: Deployment
    vendor: VendorConfig
    state: VendorState
    estimated_cost_usd: float | None

    @property
    def name(self) -> str:
        return self.deployment.vendor

    @property
    def impaired(self) -> bool:
        """Usable, but worse than a healthy peer: degraded, or only probing (half-open)."""
        return (
            self.state.health is HealthStatus.DEGRADED
            or self.state.circuit is CircuitState.HALF_OPEN
        )


def route(
    request: Request,
    settings: Settings,
    state: LiveState | None = None,
    rng: random.Random | None = None,
) -> Route:
    """Choose the deployment for `request`, with its ordered fallbacks.

    Raises:
        NoRoute: no vendor can take the request; the error lists why, vendor by vendor.
        BudgetExceeded: vendors could take it, but all over the configured maximum cost.
    """
    state = state or _NO_STATE
    rng = rng or random.Random()
    group = settings.model_groups.get(request.model)
    reasons: dict[str, str] = {}
    candidates = _candidates(request, settings, state, group, reasons)

    over_budget = _apply_cost_limit(settings, candidates, reasons)
    _apply_latency_limit(settings, candidates, reasons)
    if not candidates:
        if over_budget:
            cheapest = min(over_budget)
            raise BudgetExceeded(
                f"every vendor for model {request.model!r} is estimated over the maximum cost: "
                f"cheapest ${cheapest:.6f} > max ${settings.cost_optimization.max_cost_usd}",
                estimated_cost_usd=cheapest,
                max_cost_usd=settings.cost_optimization.max_cost_usd,
            )
        raise NoRoute(f"no vendor can take model {request.model!r}", reasons=reasons)

    primary, why = _choose_primary(
        request, settings, candidates, is_group=group is not None, rng=rng, reasons=reasons
    )
    fallbacks: list[Deployment] = []
    if request.allow_fallback:
        fallbacks = [c.deployment for c in _fallbacks(settings, candidates, group, primary)]
    return Route(
        vendor=primary.name,
        model=primary.deployment.model,
        fallbacks=fallbacks,
        queue=queue_for(primary.name),
        priority=request.priority,
        reason=why,
    )


def _candidates(
    request: Request,
    settings: Settings,
    state: LiveState,
    group: list[Deployment] | None,
    reasons: dict[str, str],
) -> list[_Candidate]:
    if group is not None:
        deployments = group
        in_group = {d.vendor for d in group}
        for name in settings.vendors:
            if name not in in_group:
                reasons[name] = f"not in model group {request.model!r}"
    else:
        deployments = [Deployment(vendor=name, model=request.model) for name in settings.vendors]
    if not settings.vendors:
        reasons["(none)"] = "no vendors are configured"
    stand_ins_allowed = _stand_ins_allowed(request, settings, group)
    required = needs(request)

    candidates: list[_Candidate] = []
    for deployment in deployments:
        vendor = settings.vendors.get(deployment.vendor)
        vendor_state = state.of(deployment.vendor)
        why = (
            "not configured"
            if vendor is None
            else _unusable(deployment, vendor, vendor_state, required)
        )
        stand_in = vendor is not None and vendor.is_stand_in
        if why is None and stand_in and deployment.vendor not in stand_ins_allowed:
            why = (
                "a stand-in vendor: it takes a request only when named "
                "(vendor=, a routing rule, a model group, default or fallback vendor)"
            )
        if vendor is None or why is not None:
            reasons.setdefault(deployment.vendor, why or "not configured")
            continue
        cost = _estimate_cost_usd(request, settings, deployment, vendor)
        candidates.append(_Candidate(deployment, vendor, vendor_state, cost))
    return candidates


def _stand_ins_allowed(
    request: Request, settings: Settings, group: list[Deployment] | None
) -> set[str]:
    """The vendors a stand-in may be: every one when no real vendor is on, else those named."""
    enabled = settings.enabled_vendors()
    if not any(not vendor.is_stand_in for vendor in enabled.values()):
        return set(enabled)  # the demo, local development: nothing real to protect
    named = {settings.default_vendor, settings.fallback_vendor, request.vendor}
    named |= set(request.vendor_weights or ())
    named |= {d.vendor for d in group or ()}
    named |= {
        rule.vendor
        for rule in settings.routing_rules
        if rule.enabled and condition_matches(rule.condition, request)
    }
    return {name for name in named if name is not None}


def _unusable(
    deployment: Deployment,
    vendor: VendorConfig,
    state: VendorState,
    required: frozenset[Capability],
) -> str | None:
    if not vendor.enabled:
        return "disabled in the configuration"
    if not serves(vendor, deployment.model):
        patterns = ", ".join(vendor.model_patterns())
        return f"does not serve model {deployment.model!r} (serves {patterns})"
    return _lacking(vendor, deployment.model, required) or _impaired(state)


def _lacking(vendor: VendorConfig, model: str, required: frozenset[Capability]) -> str | None:
    """What of `required` the vendor does not serve for `model`, said; None when nothing."""
    lacking = missing(required, vendor, model)
    if not lacking:
        return None
    return f"cannot serve {', '.join(lacking)} for model {model!r}"


def _impaired(state: VendorState) -> str | None:
    """Why the vendor's live state keeps requests away (unhealthy, circuit open); or None."""
    if state.health is HealthStatus.UNHEALTHY:
        if state.health_detail:
            return f"unhealthy: {state.health_detail}"
        return "unhealthy at its last health check"
    if state.circuit is CircuitState.OPEN:
        return "circuit open after repeated failures"
    return None


def _estimate_cost_usd(
    request: Request, settings: Settings, deployment: Deployment, vendor: VendorConfig
) -> float | None:
    blended = settings.cost_optimization.vendor_costs.get(deployment.vendor)
    price = price_for(vendor, deployment.model, fallback_per_mtok=blended)
    if price is None:
        return None
    prompt, completion = estimate_prompt_tokens(request), estimate_completion_tokens(request)
    return (prompt * price.input_per_mtok + completion * price.output_per_mtok) / 1_000_000


def _apply_cost_limit(
    settings: Settings, candidates: list[_Candidate], reasons: dict[str, str]
) -> list[float]:
    """Drop candidates estimated over the maximum cost; return their estimates."""
    cost = settings.cost_optimization
    if not cost.enabled or cost.max_cost_usd is None:
        return []
    over: list[float] = []
    for candidate in list(candidates):
        estimate = candidate.estimated_cost_usd
        if estimate is not None and estimate > cost.max_cost_usd:
            over.append(estimate)
            candidates.remove(candidate)
            reasons.setdefault(
                candidate.name,
                f"estimated ${estimate:.6f}, over the maximum ${cost.max_cost_usd}",
            )
    return over


def _apply_latency_limit(
    settings: Settings, candidates: list[_Candidate], reasons: dict[str, str]
) -> None:
    latency = settings.latency_optimization
    if not latency.enabled or latency.max_latency_ms is None:
        return
    for candidate in list(candidates):
        observed = candidate.state.latency_ms
        if observed is not None and observed > latency.max_latency_ms:
            candidates.remove(candidate)
            reasons.setdefault(
                candidate.name,
                f"observed latency {observed:.0f} ms, over the maximum "
                f"{latency.max_latency_ms:.0f} ms",
            )


def _choose_primary(
    request: Request,
    settings: Settings,
    candidates: list[_Candidate],
    *,
    is_group: bool,
    rng: random.Random,
    reasons: dict[str, str],
) -> tuple[_Candidate, str]:
    by_vendor = {c.name: c for c in reversed(candidates)}  # first deployment per vendor wins
    chosen = _requested_by_caller(request, candidates, by_vendor, rng, reasons)
    if chosen is None:
        chosen = _chosen_by_configuration(request, settings, candidates, by_vendor)
    if chosen is not None:
        return chosen
    if is_group:
        return candidates[0], "first available member of the model group"
    pool = _real_first(candidates)
    best = min(_tier(c) for c in pool)
    tier = [c for c in pool if _tier(c) == best]
    weights = [c.vendor.weight for c in tier]
    if not any(weights):
        return tier[0], "first of equal vendors (all weights are 0)"
    return _weighted_choice(tier, weights, rng), "weighted choice"


def _requested_by_caller(
    request: Request,
    candidates: list[_Candidate],
    by_vendor: dict[str, _Candidate],
    rng: random.Random,
    reasons: dict[str, str],
) -> tuple[_Candidate, str] | None:
    """The request's preferred vendor, or a draw by its own weights."""
    if request.vendor is not None:
        if request.vendor in by_vendor:
            return by_vendor[request.vendor], f"preferred vendor {request.vendor!r}"
        if not request.allow_fallback:
            raise NoRoute(
                f"preferred vendor {request.vendor!r} cannot take model {request.model!r} "
                "and fallback is disabled",
                reasons={request.vendor: reasons.get(request.vendor, "not configured")},
            )
    if request.vendor_weights is not None:
        named = [c for c in candidates if request.vendor_weights.get(c.name, 0.0) > 0]
        if named:
            weights = [request.vendor_weights[c.name] for c in named]
            return _weighted_choice(named, weights, rng), "request's vendor weights"
        if not request.allow_fallback:
            raise NoRoute(
                f"none of the vendors weighted by the request can take model {request.model!r} "
                "and fallback is disabled",
                reasons={v: reasons.get(v, "not configured") for v in request.vendor_weights},
            )
    return None


def _chosen_by_configuration(
    request: Request,
    settings: Settings,
    candidates: list[_Candidate],
    by_vendor: dict[str, _Candidate],
) -> tuple[_Candidate, str] | None:
    """A matching routing rule, else the enabled optimisations, else the default vendor."""
    for rule in sorted(settings.routing_rules, key=lambda r: -r.priority):
        if rule.enabled and condition_matches(rule.condition, request) and rule.vendor in by_vendor:
            label = f"rule {rule.name!r}" if rule.name else f"rule for vendor {rule.vendor!r}"
            return by_vendor[rule.vendor], label
    optimised = _optimisation_key(settings)
    if optimised is not None:
        key, label = optimised
        return min(_real_first(candidates), key=key), label
    if settings.default_vendor in by_vendor:
        return by_vendor[settings.default_vendor], "default vendor"
    return None


def _real_first(candidates: list[_Candidate]) -> list[_Candidate]:
    """The real vendors among `candidates`; only when there are none, the stand-ins.

    A stand-in named as the fallback vendor is a candidate, but never wins a draw or
    a ranking against a real vendor: it is chosen first only when named for that.
    """
    return [c for c in candidates if not c.vendor.is_stand_in] or candidates


def _tier(candidate: _Candidate) -> tuple[int, bool]:
    return (-candidate.vendor.priority, candidate.impaired)


def _optimisation_key(
    settings: Settings,
) -> tuple[Callable[[_Candidate], tuple[float, ...]], str] | None:
    """The sort key of the enabled optimisations: cheapest, fastest, least busy; None if off."""
    cost = settings.cost_optimization
    latency = settings.latency_optimization
    by_cost = cost.enabled and cost.prefer_cheap
    by_latency = latency.enabled and latency.prefer_fast
    by_load = settings.least_busy.enabled
    if not (by_cost or by_latency or by_load):
        return None

    def key(candidate: _Candidate) -> tuple[float, ...]:
        parts: list[float] = []
        if by_cost:
            # Unknown prices rank after known ones: we cannot claim they are cheap.
            estimate = candidate.estimated_cost_usd
            parts.append(float("inf") if estimate is None else estimate)
        if by_latency:
            observed = candidate.state.latency_ms
            weight = latency.latency_weights.get(candidate.name, 1.0)
            parts.append(float("inf") if observed is None else observed * weight)
        if by_load:
            # Work waiting for or running on it, per unit of its weight (weight 0: last).
            load = candidate.state.queue_depth + candidate.state.in_flight
            weight = candidate.vendor.weight
            parts.append(load / weight if weight > 0 else float("inf"))
        parts.append(float(candidate.impaired))
        return tuple(parts)

    label = " then ".join(
        name
        for name, on in (("cheapest", by_cost), ("fastest", by_latency), ("least busy", by_load))
        if on
    )
    return key, label


def _fallbacks(
    settings: Settings,
    candidates: list[_Candidate],
    group: list[Deployment] | None,
    primary: _Candidate,
) -> list[_Candidate]:
    """What the configuration names to try after `primary`: its fallback vendor, its group."""
    ordered: list[_Candidate] = []
    if settings.fallback_vendor is not None:
        # The first usable deployment of the fallback vendor (in a group, its own model).
        ordered += [c for c in candidates if c.name == settings.fallback_vendor][:1]
    if group is not None:
        optimised = _optimisation_key(settings)
        members = sorted(candidates, key=optimised[0]) if optimised is not None else candidates
        ordered += [c for c in members if c not in ordered]
    return [c for c in ordered if c is not primary]


def _weighted_choice(items: Sequence[T], weights: Sequence[float], rng: random.Random) -> T:
    """One of `items`, each with probability proportional to its weight."""
    point = rng.random() * sum(weights)
    for item, weight in zip(items, weights, strict=True):
        if point < weight:
            return item
        point -= weight
    # Floating-point rounding can leave `point` a hair past the last weight.
    return next(
        item for item, weight in zip(reversed(items), reversed(weights), strict=True) if weight
    )
