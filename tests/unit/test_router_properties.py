"""Properties of the router over generated vendor sets, live states and requests."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.config.policies import LatencyOptimization, RoutingCondition, RoutingRule
from dispatcher.config.schema import VendorConfig
from dispatcher.config.settings import Settings
from dispatcher.errors import NoRoute
from dispatcher.models import CircuitState, Deployment, HealthStatus, Message, Request
from dispatcher.routing.matching import condition_matches, serves
from dispatcher.routing.router import LiveState, VendorState, route

# A small alphabet, so generated vendors, rules, groups and live states overlap often.
NAMES = ("a", "b", "c", "d", "e")
MODEL = "gpt-4o"
GROUP = "grp"
# Enough draws that a share's sampling error (at most 0.5 pp) is well under the tolerance.
DRAWS = 10_000
SHARE_TOLERANCE = 0.02


vendor_configs = st.builds(
    VendorConfig,
    # Real vendors and stand-ins: a stand-in takes a request only when named.
    type=st.sampled_from(["mock", "mock", "openai"]),
    # Mostly usable, so that routes (not only refusals) are common.
    models=st.sampled_from([[], ["gpt-*"], ["gpt-4o", "claude-*"], ["claude-*"]]),
    enabled=st.sampled_from([True, True, True, False]),
    weight=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    priority=st.integers(min_value=-1, max_value=1),
)
vendor_states = st.builds(
    VendorState,
    # Every state appears, the good ones more often.
    health=st.sampled_from([*HealthStatus, HealthStatus.HEALTHY, HealthStatus.UNKNOWN]),
    circuit=st.sampled_from([*CircuitState, CircuitState.CLOSED, CircuitState.CLOSED]),
    latency_ms=st.none() | st.floats(min_value=0.0, max_value=2000.0),
)
deployments = st.builds(
    Deployment, vendor=st.sampled_from(NAMES), model=st.sampled_from([MODEL, "claude-x"])
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Request, Settings, LiveState]:
    """Arbitrary vendors, live states, rules, defaults, group and request."""
    vendors = draw(st.dictionaries(st.sampled_from(NAMES), vendor_configs, max_size=len(NAMES)))
    configured = sorted(vendors)
    maybe_configured = (st.none() | st.sampled_from(configured)) if configured else st.none()
    rules = draw(
        st.lists(
            st.builds(
                RoutingRule,
                vendor=st.sampled_from(NAMES),
                priority=st.integers(min_value=0, max_value=3),
                enabled=st.booleans(),
                condition=st.builds(
                    RoutingCondition, model_pattern=st.sampled_from([None, "gpt-*", "claude-*"])
                ),
            ),
            max_size=3,
        )
    )
    group = draw(st.lists(deployments, min_size=1, max_size=4, unique=True))
    use_group = draw(st.booleans())
    config = Settings(
        vendors=vendors,
        model_groups={GROUP: group},
        routing_rules=rules,
        default_vendor=draw(maybe_configured),
        fallback_vendor=draw(maybe_configured),
        latency_optimization=LatencyOptimization(enabled=draw(st.booleans())),
    )
    state = LiveState(
        vendors=draw(st.dictionaries(st.sampled_from(NAMES), vendor_states, max_size=len(NAMES)))
    )
    weights = draw(
        st.none()
        | st.dictionaries(
            st.sampled_from(NAMES), st.sampled_from([0.0, 1.0, 2.0]), min_size=1
        ).filter(lambda w: any(w.values()))
    )
    request = Request(
        model=GROUP if use_group else MODEL,
        messages=[Message(role="user", content="hi")],
        vendor=draw(st.none() | st.sampled_from(NAMES)),
        vendor_weights=weights,
        allow_fallback=draw(st.sampled_from([True, True, False])),
    )
    return request, config, state


def stand_ins_allowed(request: Request, config: Settings) -> set[str] | None:
    """The stand-ins a request may reach: None for all (no real vendor is enabled)."""
    if all(v.is_stand_in for v in config.vendors.values() if v.enabled):
        return None
    group = config.model_groups.get(request.model) or []
    named = {config.default_vendor, config.fallback_vendor, request.vendor}
    named |= set(request.vendor_weights or ())
    named |= {d.vendor for d in group}
    named |= {
        r.vendor
        for r in config.routing_rules
        if r.enabled and condition_matches(r.condition, request)
    }
    return {name for name in named if name is not None}


def usable_deployments(request: Request, config: Settings, state: LiveState) -> list[Deployment]:
    """Every deployment the request may run on, in order: configured, enabled, serving it,
    not down, and not a stand-in nobody named."""
    group = config.model_groups.get(request.model)
    wanted = group or [Deployment(vendor=name, model=request.model) for name in config.vendors]
    allowed = stand_ins_allowed(request, config)
    usable: list[Deployment] = []
    for deployment in wanted:
        vendor = config.vendors.get(deployment.vendor)
        live = state.of(deployment.vendor)
        if (
            vendor is not None
            and vendor.enabled
            and serves(vendor, deployment.model)
            and live.health is not HealthStatus.UNHEALTHY
            and live.circuit is not CircuitState.OPEN
            and (not vendor.is_stand_in or allowed is None or deployment.vendor in allowed)
            and deployment not in usable
        ):
            usable.append(deployment)
    return usable


def caller_demand_refused(request: Request, usable_vendors: set[str]) -> bool:
    """True when the request insists (no fallback) on vendors none of which is usable."""
    if request.allow_fallback:
        return False
    if request.vendor is not None:
        return request.vendor not in usable_vendors
    if request.vendor_weights is not None:
        return not any(
            weight > 0 and name in usable_vendors for name, weight in request.vendor_weights.items()
        )
    return False


@settings(derandomize=True, max_examples=300, deadline=None, database=None)
@given(scenario=scenarios(), seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_router_routes_only_to_usable_vendors_and_refuses_exactly_when_it_must(
    scenario: tuple[Request, Settings, LiveState], seed: int
) -> None:
    request, config, state = scenario
    usable = set(in_order := usable_deployments(request, config, state))
    usable_vendors = {deployment.vendor for deployment in usable}

    if not usable or caller_demand_refused(request, usable_vendors):
        with pytest.raises(NoRoute) as caught:
            route(request, config, state, random.Random(seed))
        reasons = set(caught.value.reasons)
        if not usable:
            assert set(config.vendors or ["(none)"]) <= reasons
        elif request.vendor is not None:
            assert reasons == {request.vendor}
        else:
            assert reasons == set(request.vendor_weights or {})
        return

    chosen = route(request, config, state, random.Random(seed))

    assert chosen.deployments[0] in usable
    assert set(chosen.deployments) <= usable
    assert len(set(chosen.deployments)) == len(chosen.deployments)
    if request.allow_fallback:
        # Only what the configuration names: the fallback vendor, the group's members.
        named = [d for d in in_order if d.vendor == config.fallback_vendor][:1]
        if request.model in config.model_groups:
            named = in_order
        assert set(chosen.fallbacks) == set(named) - {chosen.deployments[0]}
    else:
        assert chosen.fallbacks == []
    assert chosen.queue == f"llm.{chosen.vendor}"


@settings(derandomize=True, max_examples=12, deadline=None, database=None)
@given(
    weights=st.lists(
        st.floats(min_value=0.1, max_value=10.0, allow_nan=False), min_size=2, max_size=5
    ),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_router_shares_primaries_in_proportion_to_configured_weights(
    weights: list[float], seed: int
) -> None:
    names = NAMES[: len(weights)]
    config = Settings(
        vendors={
            name: VendorConfig(type="mock", weight=weight)
            for name, weight in zip(names, weights, strict=True)
        }
    )
    state = LiveState(vendors={name: VendorState(health=HealthStatus.HEALTHY) for name in names})
    # Only the primary matters here; no fallbacks keeps 10,000 routes quick.
    request = Request(
        model=MODEL, messages=[Message(role="user", content="hi")], allow_fallback=False
    )
    rng = random.Random(seed)

    counts = Counter(route(request, config, state, rng).vendor for _ in range(DRAWS))

    total = sum(weights)
    for name, weight in zip(names, weights, strict=True):
        assert abs(counts[name] / DRAWS - weight / total) <= SHARE_TOLERANCE, (name, counts)
