"""Real costs with no `prices` configured: a real worker prices calls from the built-in table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher import Message, Request
from dispatcher.routing.price_table import load_price_table
from producer import Client
from tests.integration.stack import Stack, running_stack, two_vendors

pytestmark = pytest.mark.integration

KEY = "sk-costs-test-0123456789abcdef"
PROMPT = [Message(role="user", content="what does this cost")]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        yield running


def test_a_gpt_4o_mini_call_costs_the_tables_rates_and_an_unknown_model_counts_as_unpriced(
    stack: Stack,
) -> None:
    config = two_vendors()
    assert all("prices" not in vendor for vendor in config["vendors"].values())
    stack.configure(config, OPENAI_API_KEY=KEY)
    with stack.environment():
        client = Client.from_env()
    stack.start_worker(["llm.primary", "llm.backup"])

    priced = client.submit(Request(model="gpt-4o-mini", messages=PROMPT))
    unpriced = client.submit(Request(model="llama-3-70b", messages=PROMPT, vendor="backup"))
    client.wait(priced, timeout_s=30)
    client.wait(unpriced, timeout_s=30)

    record = client.get(priced)
    usage = record.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    rates = load_price_table().families["openai"].models["gpt-4o-mini"]
    uncached = usage.prompt_tokens - usage.cached_prompt_tokens
    expected = (
        uncached * rates.input
        + usage.cached_prompt_tokens * rates.cached_input
        + usage.completion_tokens * rates.output
    ) / 1_000_000
    assert record.cost_usd > 0
    assert record.cost_usd == pytest.approx(expected)

    assert client.get(unpriced).cost_usd == 0
    stats = client.stats()
    assert stats.total_cost_usd == pytest.approx(expected)
    assert stats.unpriced_calls == 1
    assert stats.vendor_stats["backup"].unpriced_calls == 1
    assert stats.vendor_stats["primary"].unpriced_calls == 0
