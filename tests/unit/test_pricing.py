"""Prices, token estimates and cost."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dispatcher import Message, Price, Request, Response, Usage, VendorConfig
from dispatcher.routing.pricing import (
    DEFAULT_COMPLETION_TOKENS,
    cost_usd,
    estimate_completion_tokens,
    estimate_prompt_tokens,
    price_for,
    priced_reply,
)


def test_prompt_estimate_is_a_quarter_of_the_characters_plus_per_message_overhead(
    make_request: Callable[..., Request],
) -> None:
    request = make_request(
        messages=[Message(role="system", content="x" * 40), Message(role="user", content="y" * 41)]
    )
    assert estimate_prompt_tokens(request) == 21 + 2 * 4


def test_completion_estimate_is_max_tokens_or_a_typical_reply(
    make_request: Callable[..., Request],
) -> None:
    assert estimate_completion_tokens(make_request(max_tokens=77)) == 77
    assert estimate_completion_tokens(make_request()) == DEFAULT_COMPLETION_TOKENS


def test_cost_uses_prices_per_million_tokens() -> None:
    price = Price(input_per_mtok=2.5, output_per_mtok=10.0)
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=500_000)
    assert cost_usd(usage, price) == 2.5 + 5.0
    assert cost_usd(Usage(), price) == 0.0


def test_price_for_prefers_an_exact_entry_over_a_glob() -> None:
    glob_price = Price(input_per_mtok=1.0, output_per_mtok=2.0)
    exact_price = Price(input_per_mtok=5.0, output_per_mtok=15.0)
    vendor = VendorConfig(type="openai", prices={"gpt-4o*": glob_price, "gpt-4o": exact_price})

    assert price_for(vendor, "gpt-4o") == exact_price
    assert price_for(vendor, "gpt-4o-mini") == glob_price


def test_configured_prices_override_the_built_in_table() -> None:
    own = Price(input_per_mtok=1.0, output_per_mtok=2.0)
    vendor = VendorConfig(type="openai", prices={"gpt-4o-mini": own})

    assert price_for(vendor, "gpt-4o-mini") == own
    assert price_for(vendor, "o3") == Price(
        input_per_mtok=2.0, cached_input_per_mtok=0.5, output_per_mtok=8.0
    )


def test_a_model_nothing_prices_is_unpriced_until_vendor_costs_gives_a_flat_rate() -> None:
    local = VendorConfig(type="ollama")
    openai = VendorConfig(type="openai")

    assert price_for(local, "llama3") is None
    assert price_for(openai, "my-own-finetune") is None
    assert price_for(local, "llama3", fallback_per_mtok=0.5) == Price(
        input_per_mtok=0.5, output_per_mtok=0.5
    )
    # The flat rate is a fallback: a built-in price comes first.
    assert price_for(openai, "gpt-4o-mini", fallback_per_mtok=99.0) == Price(
        input_per_mtok=0.15, cached_input_per_mtok=0.075, output_per_mtok=0.6
    )


def test_cached_prompt_tokens_cost_the_cached_rate_and_reasoning_the_output_rate() -> None:
    price = Price(input_per_mtok=2.0, cached_input_per_mtok=0.5, output_per_mtok=8.0)
    usage = Usage(
        prompt_tokens=1_000_000,
        cached_prompt_tokens=400_000,
        completion_tokens=100_000,
        reasoning_tokens=60_000,
    )

    assert cost_usd(usage, price) == pytest.approx(0.6 * 2.0 + 0.4 * 0.5 + 0.1 * 8.0)


def test_cached_tokens_cost_the_input_rate_when_the_price_names_no_cached_rate() -> None:
    price = Price(input_per_mtok=2.0, output_per_mtok=8.0)
    usage = Usage(prompt_tokens=1_000_000, cached_prompt_tokens=400_000)

    assert cost_usd(usage, price) == pytest.approx(2.0)


def reply(cost_usd: float = 0.0, **usage: int) -> Response:
    return Response(content="hi", model="m", vendor="v", usage=Usage(**usage), cost_usd=cost_usd)


def test_priced_reply_keeps_the_vendors_cost_and_adds_vendor_costs_where_it_had_none() -> None:
    local = VendorConfig(type="ollama")
    reported = reply(0.25, prompt_tokens=10)

    assert priced_reply(reported, local, "llama3") == (reported, True)
    flat, priced = priced_reply(
        reply(prompt_tokens=600_000, completion_tokens=400_000),
        local,
        "llama3",
        fallback_per_mtok=3.0,
    )
    assert (flat.cost_usd, priced) == (pytest.approx(3.0), True)


def test_priced_reply_tells_an_unpriced_call_from_a_free_one() -> None:
    free = VendorConfig(type="ollama", prices={"*": Price(input_per_mtok=0, output_per_mtok=0)})
    local = VendorConfig(type="ollama")
    call = reply(prompt_tokens=100, completion_tokens=10)

    assert priced_reply(call, free, "llama3") == (call, True)
    assert priced_reply(call, local, "llama3") == (call, False)
