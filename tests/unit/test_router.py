"""The router: precedence of preference, weights, rules, optimisation and defaults."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from dispatcher.config.policies import (
    CostOptimization,
    LatencyOptimization,
    LeastBusy,
    RoutingCondition,
    RoutingRule,
)
from dispatcher.config.schema import VendorConfig
from dispatcher.config.settings import Settings
from dispatcher.errors import BudgetExceeded, NoRoute
from dispatcher.models import CircuitState, Deployment, HealthStatus, Message, Request, Route
from dispatcher.routing.pricing import Price
from dispatcher.routing.router import LiveState, VendorState, route

# Enough seeded draws that a vendor with a fair share would certainly show up.
DRAWS = 300


def vendor(**overrides: Any) -> VendorConfig:
    """An enabled vendor serving `gpt-*`, with any field overridden."""
    return VendorConfig(**{"type": "openai", "models": ["gpt-*"], **overrides})


def make_settings(
    vendors: dict[str, VendorConfig] | None = None, *, grouped: bool = False, **overrides: Any
) -> Settings:
    """Settings with three equal vendors (openai, azure, groq) unless `vendors` is given.

    With `grouped`, `gpt-4o` is a model group of every vendor, in order: its other
    members are then the fallbacks, which shows how the router ranks them all.
    """
    if vendors is None:
        vendors = {"openai": vendor(), "azure": vendor(), "groq": vendor()}
    if grouped:
        group = [Deployment(vendor=name, model="gpt-4o") for name in vendors]
        overrides["model_groups"] = {"gpt-4o": group}
    return Settings(vendors=vendors, **overrides)


def make_request(**overrides: Any) -> Request:
    """A one-message `gpt-4o` request, with any field overridden."""
    fields: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [Message(role="user", content="hi")],
        **overrides,
    }
    return Request(**fields)


def live(**states: VendorState) -> LiveState:
    """A live-state snapshot naming only the given vendors."""
    return LiveState(vendors=states)


def rule(target: str, name: str | None = None, priority: int = 0, **condition: Any) -> RoutingRule:
    """A routing rule sending requests that meet `condition` to vendor `target`."""
    return RoutingRule(
        name=name, vendor=target, priority=priority, condition=RoutingCondition(**condition)
    )


def fallback_vendors(chosen: Route) -> list[str]:
    """The vendors of a route's fallbacks, in order."""
    return [deployment.vendor for deployment in chosen.fallbacks]


def primaries(
    request: Request,
    settings: Settings,
    state: LiveState | None = None,
    *,
    seed: int = 0,
    draws: int = DRAWS,
) -> Counter[str]:
    """How often each vendor is the primary over `draws` routes with one seeded rng."""
    rng = random.Random(seed)
    return Counter(route(request, settings, state, rng).vendor for _ in range(draws))


# --- routing rules ------------------------------------------------------------


def test_router_applies_the_highest_priority_matching_rule_first() -> None:
    settings = make_settings(
        routing_rules=[
            rule("azure", name="low", priority=1),
            rule("groq", name="high", priority=10),
            rule("openai", name="middle", priority=5),
        ]
    )

    chosen = route(make_request(), settings, rng=random.Random(0))

    assert chosen.vendor == "groq"
    assert chosen.reason == "rule 'high'"


def test_router_ignores_a_disabled_rule() -> None:
    settings = make_settings(
        routing_rules=[
            RoutingRule(name="off", vendor="groq", priority=10, enabled=False),
            rule("azure", name="on", priority=1),
        ]
    )

    chosen = route(make_request(), settings, rng=random.Random(0))

    assert chosen.vendor == "azure"
    assert chosen.reason == "rule 'on'"


@pytest.mark.parametrize(
    ("condition", "request_fields", "applies"),
    [
        ({"model_pattern": "gpt-4*"}, {"model": "gpt-4o"}, True),
        ({"model_pattern": "gpt-4*"}, {"model": "gpt-3.5-turbo"}, False),
        ({"max_tokens": 100}, {"max_tokens": 100}, True),
        ({"max_tokens": 100}, {"max_tokens": 50}, True),
        ({"max_tokens": 100}, {"max_tokens": 101}, False),
        ({"max_tokens": 100}, {}, False),
        ({"temperature": 0.5}, {"temperature": 0.5}, True),
        ({"temperature": 0.5}, {"temperature": 0.0}, True),
        ({"temperature": 0.5}, {"temperature": 0.7}, False),
        ({"temperature": 0.5}, {}, False),
        ({"user": "team-*"}, {"user": "team-search"}, True),
        ({"user": "team-*"}, {"user": "alice"}, False),
        ({"user": "team-*"}, {}, False),
        (
            {"model_pattern": "gpt-*", "max_tokens": 100, "user": "team-*"},
            {"max_tokens": 10, "user": "team-a"},
            True,
        ),
        (
            {"model_pattern": "gpt-*", "max_tokens": 100, "user": "team-*"},
            {"max_tokens": 10, "user": "bob"},
            False,
        ),
    ],
    ids=[
        "model-glob-matches",
        "model-glob-misses",
        "max-tokens-equal",
        "max-tokens-below",
        "max-tokens-above",
        "max-tokens-unset",
        "temperature-equal",
        "temperature-below",
        "temperature-above",
        "temperature-unset",
        "user-glob-matches",
        "user-glob-misses",
        "user-unset",
        "all-conditions-hold",
        "one-condition-fails",
    ],
)
def test_router_applies_a_rule_only_when_every_condition_holds(
    condition: dict[str, Any], request_fields: dict[str, Any], applies: bool
) -> None:
    settings = make_settings(
        routing_rules=[rule("groq", name="special", **condition)], default_vendor="openai"
    )

    chosen = route(make_request(**request_fields), settings, rng=random.Random(0))

    if applies:
        assert (chosen.vendor, chosen.reason) == ("groq", "rule 'special'")
    else:
        assert (chosen.vendor, chosen.reason) == ("openai", "default vendor")


def test_router_skips_a_rule_whose_vendor_is_unusable_and_tries_the_next_rule() -> None:
    settings = make_settings(
        routing_rules=[rule("groq", name="first", priority=9), rule("azure", name="second")]
    )
    state = live(groq=VendorState(health=HealthStatus.UNHEALTHY))

    chosen = route(make_request(), settings, state, random.Random(0))

    assert chosen.vendor == "azure"
    assert chosen.reason == "rule 'second'"
    assert "groq" not in fallback_vendors(chosen)


def test_router_names_an_unnamed_rule_by_its_vendor_in_the_reason() -> None:
    settings = make_settings(routing_rules=[RoutingRule(vendor="azure")])

    chosen = route(make_request(), settings, rng=random.Random(0))

    assert chosen.vendor == "azure"
    assert chosen.reason == "rule for vendor 'azure'"


def test_router_prefers_a_matching_rule_over_the_default_vendor() -> None:
    settings = make_settings(
        routing_rules=[rule("groq", name="short", max_tokens=64)], default_vendor="openai"
    )

    assert route(make_request(max_tokens=32), settings, rng=random.Random(0)).vendor == "groq"
    assert route(make_request(max_tokens=128), settings, rng=random.Random(0)).vendor == "openai"


# --- model groups ---------------------------------------------------------------


def group_settings(replaced: dict[str, VendorConfig] | None = None, **overrides: Any) -> Settings:
    """Four vendors with their own model names, and a 'smart' group over three of them.

    Weights and priorities favour the group's last members, so only group order explains
    a route that follows the group. `replaced` swaps in other configs by vendor name.
    """
    vendors: dict[str, VendorConfig] = {
        "openai": vendor(models=["gpt-*"], weight=2.0),
        "anthropic": vendor(type="anthropic", models=["claude-*"], weight=1.0),
        "azure": vendor(models=["gpt-*"], weight=9.0, priority=3),
        "gemini": vendor(type="gemini", models=["gemini-*"], weight=50.0, priority=9),
    }
    groups = {
        "smart": [
            Deployment(vendor="anthropic", model="claude-sonnet-4"),
            Deployment(vendor="openai", model="gpt-4o"),
            Deployment(vendor="azure", model="gpt-4o-mini"),
        ]
    }
    return make_settings({**vendors, **(replaced or {})}, model_groups=groups, **overrides)


def test_router_sends_a_group_request_to_the_first_member_with_its_model_name() -> None:
    chosen = route(make_request(model="smart"), group_settings(), rng=random.Random(0))

    assert (chosen.vendor, chosen.model) == ("anthropic", "claude-sonnet-4")
    assert chosen.reason == "first available member of the model group"
    assert chosen.queue == "llm.anthropic"


def test_router_orders_group_fallbacks_as_the_group_does_with_each_vendors_model() -> None:
    chosen = route(make_request(model="smart"), group_settings(), rng=random.Random(0))

    assert chosen.fallbacks == [
        Deployment(vendor="openai", model="gpt-4o"),
        Deployment(vendor="azure", model="gpt-4o-mini"),
    ]


def test_router_never_routes_a_group_request_to_a_vendor_outside_the_group() -> None:
    counts = primaries(make_request(model="smart"), group_settings(), draws=50)
    chosen = route(make_request(model="smart"), group_settings(), rng=random.Random(0))

    assert set(counts) == {"anthropic"}
    assert "gemini" not in fallback_vendors(chosen)


def test_router_skips_an_unhealthy_first_group_member() -> None:
    state = live(anthropic=VendorState(health=HealthStatus.UNHEALTHY))

    chosen = route(make_request(model="smart"), group_settings(), state, random.Random(0))

    assert (chosen.vendor, chosen.model) == ("openai", "gpt-4o")
    assert chosen.fallbacks == [Deployment(vendor="azure", model="gpt-4o-mini")]


def test_router_reports_vendors_outside_the_group_as_not_in_the_group() -> None:
    state = live(
        anthropic=VendorState(health=HealthStatus.UNHEALTHY),
        openai=VendorState(circuit=CircuitState.OPEN),
    )
    settings = group_settings({"azure": vendor(enabled=False)})

    with pytest.raises(NoRoute) as caught:
        route(make_request(model="smart"), settings, state, random.Random(0))

    assert caught.value.reasons == {
        "anthropic": "unhealthy at its last health check",
        "openai": "circuit open after repeated failures",
        "azure": "disabled in the configuration",
        "gemini": "not in model group 'smart'",
    }


def test_router_gives_a_preferred_group_member_the_model_the_group_names_for_it() -> None:
    chosen = route(make_request(model="smart", vendor="openai"), group_settings())

    assert (chosen.vendor, chosen.model) == ("openai", "gpt-4o")
    assert chosen.fallbacks == [
        Deployment(vendor="anthropic", model="claude-sonnet-4"),
        Deployment(vendor="azure", model="gpt-4o-mini"),
    ]


def test_router_skips_a_rule_for_a_vendor_outside_the_requested_group() -> None:
    settings = group_settings(routing_rules=[rule("gemini", name="outsider", priority=9)])

    chosen = route(make_request(model="smart"), settings, rng=random.Random(0))

    assert chosen.vendor == "anthropic"
    assert chosen.reason == "first available member of the model group"


# --- the request's preferred vendor ----------------------------------------------


def test_router_uses_the_preferred_vendor_when_it_is_usable() -> None:
    settings = make_settings(routing_rules=[rule("groq", name="any")], default_vendor="openai")

    chosen = route(make_request(vendor="azure"), settings, rng=random.Random(0))

    assert chosen.vendor == "azure"
    assert chosen.reason == "preferred vendor 'azure'"
    # Serving the model does not make a vendor a fallback: none is configured.
    assert fallback_vendors(chosen) == []


def test_router_routes_normally_when_the_preferred_vendor_is_unusable_and_fallback_allowed() -> (
    None
):
    settings = make_settings(default_vendor="openai")
    state = live(azure=VendorState(circuit=CircuitState.OPEN))

    chosen = route(make_request(vendor="azure"), settings, state, random.Random(0))

    assert chosen.vendor == "openai"
    assert chosen.reason == "default vendor"
    assert "azure" not in fallback_vendors(chosen)


def test_router_refuses_when_the_preferred_vendor_is_unusable_and_fallback_is_disallowed() -> None:
    settings = make_settings(default_vendor="openai")
    state = live(azure=VendorState(health=HealthStatus.UNHEALTHY))
    request = make_request(vendor="azure", allow_fallback=False)

    with pytest.raises(NoRoute) as caught:
        route(request, settings, state, random.Random(0))

    assert caught.value.reasons == {"azure": "unhealthy at its last health check"}
    assert "preferred vendor 'azure'" in str(caught.value)
    assert "fallback is disabled" in str(caught.value)


def test_router_refuses_an_unconfigured_preferred_vendor_when_fallback_is_disallowed() -> None:
    request = make_request(vendor="mistral", allow_fallback=False)

    with pytest.raises(NoRoute) as caught:
        route(request, make_settings(), rng=random.Random(0))

    assert caught.value.reasons == {"mistral": "not configured"}


# --- the request's own vendor weights ----------------------------------------------


def test_router_draws_the_primary_only_among_vendors_the_request_weights_above_zero() -> None:
    vendors = {name: vendor() for name in ("openai", "azure", "groq", "together")}
    request = make_request(vendor_weights={"openai": 1.0, "azure": 3.0, "groq": 0.0})

    counts = primaries(request, make_settings(vendors))

    assert set(counts) == {"openai", "azure"}
    assert counts["azure"] > counts["openai"]


def test_router_falls_back_from_a_weighted_draw_only_to_the_fallback_vendor() -> None:
    vendors = {name: vendor() for name in ("openai", "azure", "groq", "together")}
    request = make_request(vendor_weights={"openai": 1.0, "groq": 0.0})

    chosen = route(
        request, make_settings(vendors, fallback_vendor="together"), rng=random.Random(0)
    )

    assert chosen.vendor == "openai"
    assert chosen.reason == "request's vendor weights"
    assert fallback_vendors(chosen) == ["together"]


def test_router_request_weights_override_the_configured_default_vendor() -> None:
    request = make_request(vendor_weights={"groq": 2.0})

    counts = primaries(request, make_settings(default_vendor="openai"), draws=50)

    assert counts == Counter({"groq": 50})


def test_router_ignores_request_weights_for_unusable_vendors_when_fallback_allowed() -> None:
    request = make_request(vendor_weights={"groq": 2.0})
    state = live(groq=VendorState(health=HealthStatus.UNHEALTHY))

    chosen = route(request, make_settings(default_vendor="openai"), state, random.Random(0))

    assert chosen.vendor == "openai"
    assert chosen.reason == "default vendor"


# --- weighted choice by configuration ------------------------------------------------


def test_router_draws_only_from_the_highest_priority_tier() -> None:
    vendors = {
        "openai": vendor(priority=2, weight=1.0),
        "azure": vendor(priority=2, weight=1.0),
        "groq": vendor(priority=1, weight=100.0),
    }

    counts = primaries(make_request(), make_settings(vendors))

    assert set(counts) == {"openai", "azure"}


def test_router_draws_in_proportion_to_configured_weights() -> None:
    vendors = {"openai": vendor(weight=1.0), "azure": vendor(weight=3.0)}

    counts = primaries(make_request(), make_settings(vendors), draws=4000)

    assert counts["azure"] / 4000 == pytest.approx(0.75, abs=0.03)


def test_router_never_draws_a_zero_weight_vendor_beside_weighted_peers() -> None:
    vendors = {"openai": vendor(weight=1.0), "azure": vendor(weight=0.0)}

    counts = primaries(make_request(), make_settings(vendors))

    assert set(counts) == {"openai"}


@pytest.mark.parametrize(
    "impairment",
    [VendorState(health=HealthStatus.DEGRADED), VendorState(circuit=CircuitState.HALF_OPEN)],
    ids=["degraded", "half-open"],
)
def test_router_prefers_healthy_vendors_over_impaired_ones_in_the_same_tier(
    impairment: VendorState,
) -> None:
    vendors = {"openai": vendor(weight=100.0), "azure": vendor(weight=1.0)}
    state = live(openai=impairment, azure=VendorState(health=HealthStatus.HEALTHY))

    counts = primaries(make_request(), make_settings(vendors), state)

    assert set(counts) == {"azure"}


def test_router_prefers_a_degraded_higher_priority_vendor_to_a_healthy_lower_one() -> None:
    vendors = {"openai": vendor(priority=5), "azure": vendor(priority=1)}
    state = live(openai=VendorState(health=HealthStatus.DEGRADED))

    counts = primaries(make_request(), make_settings(vendors), state, draws=50)

    assert counts == Counter({"openai": 50})


def test_router_picks_the_first_of_the_tier_when_all_weights_are_zero() -> None:
    vendors = {
        "groq": vendor(priority=0, weight=0.0),
        "openai": vendor(priority=1, weight=0.0),
        "azure": vendor(priority=1, weight=0.0),
    }

    counts = primaries(make_request(), make_settings(vendors), draws=50)
    chosen = route(make_request(), make_settings(vendors), rng=random.Random(0))

    assert counts == Counter({"openai": 50})
    assert chosen.reason == "first of equal vendors (all weights are 0)"


def test_router_chooses_the_same_routes_from_the_same_seed() -> None:
    settings = make_settings(
        {"openai": vendor(weight=1.0), "azure": vendor(weight=2.0), "groq": vendor(weight=3.0)}
    )
    request = make_request()

    first_rng, second_rng = random.Random(42), random.Random(42)
    first = [route(request, settings, rng=first_rng) for _ in range(50)]
    second = [route(request, settings, rng=second_rng) for _ in range(50)]

    assert first == second
    assert len({chosen.vendor for chosen in first}) > 1
    assert first[0].reason == "weighted choice"


# --- health and circuit breakers ------------------------------------------------------


@pytest.mark.parametrize(
    "bad_state",
    [VendorState(health=HealthStatus.UNHEALTHY), VendorState(circuit=CircuitState.OPEN)],
    ids=["unhealthy", "circuit-open"],
)
def test_router_never_routes_to_or_falls_back_on_an_unhealthy_or_open_vendor(
    bad_state: VendorState,
) -> None:
    vendors = {"openai": vendor(weight=100.0, priority=5), "azure": vendor(), "groq": vendor()}
    settings = make_settings(vendors, fallback_vendor="openai", default_vendor="openai")
    state = live(openai=bad_state)

    for seed in range(50):
        chosen = route(make_request(), settings, state, random.Random(seed))
        assert chosen.vendor != "openai"
        assert "openai" not in fallback_vendors(chosen)


def test_router_skips_vendor_whose_circuit_is_open() -> None:
    state = live(openai=VendorState(circuit=CircuitState.OPEN))

    settings = make_settings(grouped=True, default_vendor="openai")
    chosen = route(make_request(), settings, state, random.Random(0))

    assert chosen.vendor != "openai"
    assert sorted([chosen.vendor, *fallback_vendors(chosen)]) == ["azure", "groq"]


def test_router_still_uses_a_half_open_vendor() -> None:
    vendors = {"openai": vendor(), "azure": vendor()}
    state = live(
        openai=VendorState(circuit=CircuitState.HALF_OPEN),
        azure=VendorState(health=HealthStatus.UNHEALTHY),
    )

    chosen = route(make_request(), make_settings(vendors), state, random.Random(0))

    assert chosen.vendor == "openai"


def test_router_keeps_a_half_open_vendor_among_the_fallbacks() -> None:
    state = live(groq=VendorState(circuit=CircuitState.HALF_OPEN))
    settings = make_settings(grouped=True, default_vendor="openai")

    chosen = route(make_request(), settings, state, random.Random(0))

    assert chosen.vendor == "openai"
    assert fallback_vendors(chosen) == ["azure", "groq"]


# --- cost optimisation ---------------------------------------------------------------


def priced(input_per_mtok: float, output_per_mtok: float | None = None) -> VendorConfig:
    """A vendor with a `gpt-*` price in USD per million tokens."""
    output = input_per_mtok if output_per_mtok is None else output_per_mtok
    return vendor(prices={"gpt-*": Price(input_per_mtok=input_per_mtok, output_per_mtok=output)})


def test_router_prefers_the_cheapest_vendor_by_configured_prices() -> None:
    vendors = {"openai": priced(5.0, 15.0), "azure": priced(0.5, 1.5), "groq": priced(2.0)}
    settings = make_settings(
        vendors, grouped=True, cost_optimization=CostOptimization(enabled=True)
    )

    chosen = route(make_request(), settings, rng=random.Random(0))

    assert chosen.vendor == "azure"
    assert chosen.reason == "cheapest"
    assert fallback_vendors(chosen) == ["groq", "openai"]


def test_router_prefers_an_exact_model_price_over_a_glob_price() -> None:
    exact = vendor(
        prices={
            "gpt-*": Price(input_per_mtok=100.0, output_per_mtok=100.0),
            "gpt-4o": Price(input_per_mtok=0.1, output_per_mtok=0.1),
        }
    )
    vendors = {"openai": exact, "azure": priced(1.0)}
    settings = make_settings(vendors, cost_optimization=CostOptimization(enabled=True))

    assert route(make_request(), settings, rng=random.Random(0)).vendor == "openai"


def unpriced() -> VendorConfig:
    """A vendor whose type the built-in price table does not cover (a local server)."""
    return vendor(type="ollama")


def test_router_uses_configured_vendor_costs_for_vendors_without_prices() -> None:
    vendors = {"openai": priced(3.0), "lab": unpriced(), "local": unpriced()}
    cost = CostOptimization(enabled=True, vendor_costs={"lab": 4.0, "local": 0.2})

    chosen = route(
        make_request(),
        make_settings(vendors, grouped=True, cost_optimization=cost),
        rng=random.Random(0),
    )

    assert chosen.vendor == "local"
    assert fallback_vendors(chosen) == ["openai", "lab"]


def test_router_ranks_a_vendor_without_any_price_after_priced_ones() -> None:
    vendors = {"local": unpriced(), "azure": priced(1000.0)}
    settings = make_settings(
        vendors, grouped=True, cost_optimization=CostOptimization(enabled=True)
    )

    chosen = route(make_request(), settings, rng=random.Random(0))

    assert chosen.vendor == "azure"
    assert fallback_vendors(chosen) == ["local"]


def test_router_prices_known_models_from_the_built_in_table() -> None:
    # gpt-4o is $2.50 in and $10 out per million tokens in the built-in table; a
    # configured price overrides it, and vendor_costs only prices what nothing else does.
    vendors = {"openai": vendor(), "azure": priced(20.0), "local": unpriced()}
    cost = CostOptimization(enabled=True, vendor_costs={"openai": 50.0, "local": 15.0})

    chosen = route(
        make_request(),
        make_settings(vendors, grouped=True, cost_optimization=cost),
        rng=random.Random(0),
    )

    assert chosen.vendor == "openai"
    assert fallback_vendors(chosen) == ["local", "azure"]


def test_router_ignores_prices_when_cost_optimisation_is_disabled() -> None:
    vendors = {"openai": priced(100.0), "azure": priced(0.1)}
    settings = make_settings(vendors, default_vendor="openai")

    chosen = route(make_request(), settings, rng=random.Random(0))

    assert (chosen.vendor, chosen.reason) == ("openai", "default vendor")


def test_router_excludes_vendors_estimated_over_the_maximum_cost() -> None:
    # "hi" is 1 token + 4 per message; with max_tokens=1000 the estimate is
    # 1005 tokens, so $10/Mtok costs $0.01005 and $1/Mtok costs $0.001005.
    vendors = {"openai": priced(10.0), "azure": priced(1.0), "groq": priced(2.0)}
    cost = CostOptimization(enabled=True, max_cost_usd=0.005, prefer_cheap=False)
    settings = make_settings(vendors, cost_optimization=cost, default_vendor="openai")

    chosen = route(make_request(max_tokens=1000), settings, rng=random.Random(0))

    assert chosen.vendor in {"azure", "groq"}
    assert "openai" not in [chosen.vendor, *fallback_vendors(chosen)]


def test_router_raises_budget_exceeded_when_every_vendor_is_over_the_maximum_cost() -> None:
    vendors = {"openai": priced(10.0), "azure": priced(1.0)}
    cost = CostOptimization(enabled=True, max_cost_usd=0.0001)
    settings = make_settings(vendors, cost_optimization=cost)

    with pytest.raises(BudgetExceeded) as caught:
        route(make_request(max_tokens=1000), settings, rng=random.Random(0))

    error = caught.value
    assert error.estimated_cost_usd == pytest.approx(1005 / 1_000_000)
    assert error.max_cost_usd == 0.0001
    assert "'gpt-4o'" in str(error)
    assert "over the maximum cost" in str(error)
    assert "$0.001005" in str(error)
    assert "max $0.0001" in str(error)


def test_router_raises_budget_exceeded_when_the_only_usable_vendor_is_over_the_maximum_cost() -> (
    None
):
    # A budget error needs some vendor over budget and none left at all; here one
    # is over budget and the other is unhealthy, so the budget is what stops it.
    vendors = {"openai": priced(10.0), "azure": priced(1.0)}
    cost = CostOptimization(enabled=True, max_cost_usd=0.005)
    state = live(azure=VendorState(health=HealthStatus.UNHEALTHY))

    with pytest.raises(BudgetExceeded) as caught:
        route(
            make_request(max_tokens=1000),
            make_settings(vendors, cost_optimization=cost),
            state,
            random.Random(0),
        )

    assert caught.value.estimated_cost_usd == pytest.approx(0.01005)


# --- latency optimisation -----------------------------------------------------------


def test_router_prefers_the_vendor_with_the_lowest_observed_latency() -> None:
    latency = LatencyOptimization(enabled=True)
    state = live(
        openai=VendorState(latency_ms=800.0),
        azure=VendorState(latency_ms=120.0),
        groq=VendorState(latency_ms=300.0),
    )

    chosen = route(
        make_request(),
        make_settings(grouped=True, latency_optimization=latency),
        state,
        random.Random(0),
    )

    assert chosen.vendor == "azure"
    assert chosen.reason == "fastest"
    assert fallback_vendors(chosen) == ["groq", "openai"]


def test_router_multiplies_observed_latency_by_the_vendors_latency_weight() -> None:
    latency = LatencyOptimization(enabled=True, latency_weights={"azure": 3.0})
    state = live(
        openai=VendorState(latency_ms=300.0),
        azure=VendorState(latency_ms=120.0),
        groq=VendorState(latency_ms=400.0),
    )

    chosen = route(
        make_request(),
        make_settings(grouped=True, latency_optimization=latency),
        state,
        random.Random(0),
    )

    assert chosen.vendor == "openai"
    assert fallback_vendors(chosen) == ["azure", "groq"]


def test_router_ranks_a_vendor_with_unknown_latency_last() -> None:
    latency = LatencyOptimization(enabled=True)
    state = live(openai=VendorState(latency_ms=5000.0), azure=VendorState(latency_ms=900.0))

    chosen = route(
        make_request(),
        make_settings(grouped=True, latency_optimization=latency),
        state,
        random.Random(0),
    )

    assert chosen.vendor == "azure"
    assert fallback_vendors(chosen) == ["openai", "groq"]


def test_router_excludes_vendors_slower_than_the_maximum_latency_and_says_why() -> None:
    latency = LatencyOptimization(enabled=True, max_latency_ms=500.0)
    vendors = {"openai": vendor(), "azure": vendor()}
    state = live(
        openai=VendorState(latency_ms=900.0),
        azure=VendorState(health=HealthStatus.UNHEALTHY),
    )

    with pytest.raises(NoRoute) as caught:
        route(
            make_request(),
            make_settings(vendors, latency_optimization=latency),
            state,
            random.Random(0),
        )

    assert caught.value.reasons["openai"] == "observed latency 900 ms, over the maximum 500 ms"


def test_router_routes_around_a_vendor_slower_than_the_maximum_latency() -> None:
    latency = LatencyOptimization(enabled=True, max_latency_ms=500.0, prefer_fast=False)
    state = live(openai=VendorState(latency_ms=501.0), azure=VendorState(latency_ms=499.0))
    settings = make_settings(grouped=True, latency_optimization=latency, default_vendor="openai")

    chosen = route(make_request(), settings, state, random.Random(0))

    assert "openai" not in [chosen.vendor, *fallback_vendors(chosen)]
    assert sorted([chosen.vendor, *fallback_vendors(chosen)]) == ["azure", "groq"]


def test_router_ranks_by_cost_then_by_latency_when_both_are_enabled() -> None:
    vendors = {"openai": priced(1.0), "azure": priced(1.0), "groq": priced(5.0)}
    state = live(
        openai=VendorState(latency_ms=400.0),
        azure=VendorState(latency_ms=200.0),
        groq=VendorState(latency_ms=10.0),
    )
    settings = make_settings(
        vendors,
        grouped=True,
        cost_optimization=CostOptimization(enabled=True),
        latency_optimization=LatencyOptimization(enabled=True),
    )

    chosen = route(make_request(), settings, state, random.Random(0))

    assert chosen.vendor == "azure"
    assert chosen.reason == "cheapest then fastest"
    assert fallback_vendors(chosen) == ["openai", "groq"]


# --- default and fallback vendors ------------------------------------------------------


def test_router_uses_the_default_vendor_when_no_rule_matches() -> None:
    settings = make_settings(
        routing_rules=[rule("groq", name="claude-only", model_pattern="claude-*")],
        default_vendor="azure",
    )

    chosen = route(make_request(), settings, rng=random.Random(0))

    assert (chosen.vendor, chosen.reason) == ("azure", "default vendor")


def test_router_puts_the_fallback_vendor_first_among_the_fallbacks() -> None:
    vendors = {"openai": vendor(weight=5.0), "azure": vendor(weight=3.0), "groq": vendor()}
    settings = make_settings(vendors, default_vendor="openai", fallback_vendor="groq")

    chosen = route(make_request(), settings, rng=random.Random(0))

    assert chosen.vendor == "openai"
    assert fallback_vendors(chosen) == ["groq"]


def test_router_never_falls_back_to_a_vendor_only_because_it_serves_the_model() -> None:
    vendors = {name: vendor() for name in ("openai", "azure", "groq", "together")}
    settings = make_settings(vendors, default_vendor="together")

    chosen = route(make_request(), settings, rng=random.Random(0))

    assert chosen.vendor == "together"
    assert chosen.fallbacks == []


def test_router_tries_the_fallback_vendor_before_the_groups_other_members() -> None:
    vendors = {name: vendor() for name in ("openai", "azure", "groq", "together")}
    settings = make_settings(vendors, grouped=True, fallback_vendor="groq")

    chosen = route(make_request(), settings, rng=random.Random(0))

    assert chosen.vendor == "openai"
    assert fallback_vendors(chosen) == ["groq", "azure", "together"]


def test_router_gives_no_fallbacks_when_the_request_disallows_fallback() -> None:
    settings = make_settings(default_vendor="openai", fallback_vendor="groq")

    chosen = route(make_request(allow_fallback=False), settings, rng=random.Random(0))

    assert chosen.vendor == "openai"
    assert chosen.fallbacks == []


# --- no route ---------------------------------------------------------------------------


def test_router_says_why_each_vendor_was_left_out_when_nothing_fits() -> None:
    vendors = {
        "openai": vendor(enabled=False),
        "anthropic": vendor(type="anthropic", models=["claude-*"]),
        "azure": vendor(),
        "groq": vendor(),
    }
    state = live(
        azure=VendorState(health=HealthStatus.UNHEALTHY),
        groq=VendorState(circuit=CircuitState.OPEN),
    )

    with pytest.raises(NoRoute) as caught:
        route(make_request(), make_settings(vendors), state, random.Random(0))

    reasons = caught.value.reasons
    assert reasons == {
        "openai": "disabled in the configuration",
        "anthropic": "does not serve model 'gpt-4o' (serves claude-*)",
        "azure": "unhealthy at its last health check",
        "groq": "circuit open after repeated failures",
    }
    message = str(caught.value)
    assert message.startswith("no vendor can take model 'gpt-4o'")
    for name, why in reasons.items():
        assert f"{name}: {why}" in message


def test_router_raises_no_route_when_no_vendors_are_configured() -> None:
    with pytest.raises(NoRoute) as caught:
        route(make_request(), make_settings({}), rng=random.Random(0))

    assert caught.value.reasons == {"(none)": "no vendors are configured"}
    assert "no vendors are configured" in str(caught.value)


def test_router_reports_the_default_model_patterns_of_a_vendor_that_does_not_serve_it() -> None:
    vendors = {"anthropic": VendorConfig(type="anthropic")}

    with pytest.raises(NoRoute) as caught:
        route(make_request(), make_settings(vendors), rng=random.Random(0))

    assert caught.value.reasons == {"anthropic": "does not serve model 'gpt-4o' (serves claude-*)"}


# --- the route itself --------------------------------------------------------------------


@pytest.mark.parametrize("priority", [0, 5, 9])
def test_router_queues_on_the_vendors_queue_with_the_requests_priority(priority: int) -> None:
    settings = make_settings(default_vendor="groq")

    chosen = route(make_request(priority=priority), settings, rng=random.Random(0))

    assert chosen.queue == "llm.groq"
    assert chosen.priority == priority
    assert chosen.model == "gpt-4o"


def test_router_names_the_queue_after_the_chosen_vendor() -> None:
    chosen = route(make_request(), make_settings(grouped=True), rng=random.Random(3))

    assert chosen.queue == f"llm.{chosen.vendor}"
    assert sorted([chosen.vendor, *fallback_vendors(chosen)]) == ["azure", "groq", "openai"]
    assert all(deployment.model == "gpt-4o" for deployment in chosen.fallbacks)


def test_router_works_without_live_state_or_rng() -> None:
    chosen = route(make_request(), make_settings(default_vendor="azure"))

    assert chosen.vendor == "azure"


# --- least busy --------------------------------------------------------------------------


def test_router_prefers_the_vendor_with_the_least_work_queued_and_running() -> None:
    state = live(
        openai=VendorState(queue_depth=10, in_flight=5),
        azure=VendorState(queue_depth=0, in_flight=2),
        groq=VendorState(queue_depth=1, in_flight=3),
    )

    chosen = route(
        make_request(),
        make_settings(grouped=True, least_busy=LeastBusy(enabled=True)),
        state,
        random.Random(0),
    )

    assert (chosen.vendor, chosen.reason) == ("azure", "least busy")
    assert fallback_vendors(chosen) == ["groq", "openai"]


def test_least_busy_counts_work_per_unit_of_weight() -> None:
    vendors = {"big": vendor(weight=4.0), "small": vendor(weight=1.0), "off": vendor(weight=0.0)}
    state = live(
        big=VendorState(in_flight=10),  # 2.5 per unit of weight
        small=VendorState(in_flight=3),  # 3 per unit
        off=VendorState(),  # idle, but weight 0 ranks it last
    )
    settings = make_settings(vendors, grouped=True, least_busy=LeastBusy(enabled=True))

    chosen = route(make_request(), settings, state, random.Random(0))

    assert chosen.vendor == "big"
    assert fallback_vendors(chosen) == ["small", "off"]


def test_least_busy_is_off_by_default() -> None:
    state = live(openai=VendorState(queue_depth=100), azure=VendorState(), groq=VendorState())
    counts = Counter(
        route(make_request(), make_settings(), state, random.Random(seed)).vendor
        for seed in range(60)
    )
    assert counts["openai"] > 0  # weights alone decide


# --- stand-in vendors ----------------------------------------------------------------------


def with_stand_ins(**overrides: Any) -> Settings:
    """A real OpenAI beside the mock (in process) and a mock server, both serving every model."""
    vendors = {
        "openai": VendorConfig(type="openai"),
        "mock": VendorConfig(type="mock", models=["*"]),
        "mockhttp": VendorConfig(
            type="openai_compatible",
            base_url="http://mock-vendor:8900/v1",
            models=["*"],
            stand_in=True,
        ),
    }
    return Settings(vendors=vendors, **overrides)


def test_a_stand_in_never_takes_or_backs_up_a_real_vendors_traffic() -> None:
    settings = with_stand_ins()
    for seed in range(30):
        chosen = route(make_request(model="gpt-4o-mini"), settings, rng=random.Random(seed))
        assert (chosen.vendor, chosen.fallbacks) == ("openai", [])


def test_a_real_vendors_outage_is_no_route_not_an_answer_from_a_stand_in() -> None:
    state = live(openai=VendorState(circuit=CircuitState.OPEN))

    with pytest.raises(NoRoute) as caught:
        route(make_request(model="gpt-4o-mini"), with_stand_ins(), state, random.Random(0))

    assert caught.value.reasons["openai"] == "circuit open after repeated failures"
    assert caught.value.reasons["mock"].startswith("a stand-in vendor")
    assert caught.value.reasons["mockhttp"].startswith("a stand-in vendor")


def test_a_model_no_real_vendor_serves_is_no_route_not_an_echo() -> None:
    with pytest.raises(NoRoute) as caught:
        route(make_request(model="llama-3"), with_stand_ins(), rng=random.Random(0))

    assert "does not serve model 'llama-3'" in caught.value.reasons["openai"]


@pytest.mark.parametrize(
    ("how", "request_fields", "settings_fields"),
    [
        ("vendor=", {"vendor": "mockhttp"}, {}),
        ("vendor weights", {"vendor_weights": {"mockhttp": 1.0}}, {}),
        ("routing rule", {}, {"routing_rules": [rule("mockhttp", model_pattern="llama-*")]}),
        (
            "model group",
            {},
            {"model_groups": {"llama-3": [Deployment(vendor="mockhttp", model="llama-3")]}},
        ),
        ("default vendor", {}, {"default_vendor": "mockhttp"}),
    ],
)
def test_a_stand_in_takes_a_request_when_it_is_named(
    how: str, request_fields: dict[str, Any], settings_fields: dict[str, Any]
) -> None:
    settings = with_stand_ins(**settings_fields)

    chosen = route(make_request(model="llama-3", **request_fields), settings, rng=random.Random(0))

    assert chosen.vendor == "mockhttp", how
    assert "mock" not in fallback_vendors(chosen)


def test_a_routing_rule_that_does_not_match_names_no_stand_in() -> None:
    settings = with_stand_ins(routing_rules=[rule("mock", model_pattern="test-*")])

    with pytest.raises(NoRoute):
        route(make_request(model="llama-3"), settings, rng=random.Random(0))


def test_the_fallback_vendor_may_be_a_stand_in_when_the_configuration_says_so() -> None:
    settings = with_stand_ins(fallback_vendor="mock")

    chosen = route(make_request(model="gpt-4o-mini"), settings, rng=random.Random(0))

    assert (chosen.vendor, fallback_vendors(chosen)) == ("openai", ["mock"])


def test_with_no_real_vendor_enabled_the_stand_ins_take_any_request() -> None:
    settings = Settings(
        vendors={
            "openai": VendorConfig(type="openai", enabled=False),
            "mock": VendorConfig(type="mock", models=["*"]),
        }
    )

    chosen = route(make_request(model="llama-3"), settings, rng=random.Random(0))

    assert chosen.vendor == "mock"


def test_type_mock_is_a_stand_in_unless_configured_otherwise() -> None:
    assert VendorConfig(type="mock").is_stand_in
    assert not VendorConfig(type="mock", stand_in=False).is_stand_in
    assert not VendorConfig(type="openai").is_stand_in
    assert VendorConfig(type="openai", stand_in=True).is_stand_in
