"""Prices, token estimates and cost."""

from __future__ import annotations

from collections.abc import Callable

from dispatcher import Message, Price, Request, Usage, VendorConfig
from dispatcher.routing.pricing import (
    DEFAULT_COMPLETION_TOKENS,
    cost_usd,
    estimate_completion_tokens,
    estimate_prompt_tokens,
    price_for,
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
    assert price_for(vendor, "o1") is None
