"""Token estimates and cost."""

from __future__ import annotations

from collections.abc import Callable

from dispatcher import Message, Price, Request, Usage
from dispatcher.routing.pricing import (
    DEFAULT_COMPLETION_TOKENS,
    cost_usd,
    estimate_completion_tokens,
    estimate_prompt_tokens,
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
