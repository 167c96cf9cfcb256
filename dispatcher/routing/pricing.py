"""What a call costs: a vendor's price for a model, token estimates, and cost in USD.

Prices are per million tokens. A vendor's configured `prices` (by model name,
then glob) come first; then the built-in table (`price_table.py`) for the
vendor's type; then, when the caller passes one, `cost_optimization.vendor_costs`'
flat rate for the vendor. A model none of them names is unpriced (`None`), never
free. Estimates feed the router's cost optimisation and the token-per-minute
limiter; the real cost of a job is computed from the vendor's reported usage.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from dispatcher.config.schema import Price, VendorConfig
from dispatcher.models import Request, Response, Usage
from dispatcher.routing.price_table import builtin_price

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_COMPLETION_TOKENS",
    "Price",
    "cost_usd",
    "estimate_completion_tokens",
    "estimate_prompt_tokens",
    "price_for",
    "priced_reply",
]

# English text averages about four characters per token in the GPT and Claude
# tokenizers; a tokenizer-free estimate is enough for routing and limits.
CHARS_PER_TOKEN = 4
# Chat templates add a few tokens per message (role markers, separators).
TOKENS_PER_MESSAGE = 4
# Reply length assumed when a request sets no max_tokens: a typical chat answer.
DEFAULT_COMPLETION_TOKENS = 512
TOKENS_PER_MILLION = 1_000_000


def price_for(
    vendor: VendorConfig, model: str, *, fallback_per_mtok: float | None = None
) -> Price | None:
    """`vendor`'s price of `model`, or None when nothing prices it.

    The configured `prices` first (an exact entry, else the first glob match),
    then the built-in table for the vendor's type, then `fallback_per_mtok`
    (the vendor's `cost_optimization.vendor_costs` entry) as one flat rate for
    every token.
    """
    if model in vendor.prices:
        return vendor.prices[model]
    for pattern, price in vendor.prices.items():
        if fnmatchcase(model, pattern):
            return price
    builtin = builtin_price(vendor.type, model)
    if builtin is not None:
        return builtin
    if fallback_per_mtok is None:
        return None
    return Price(input_per_mtok=fallback_per_mtok, output_per_mtok=fallback_per_mtok)


def estimate_prompt_tokens(request: Request) -> int:
    """A tokenizer-free estimate of the prompt's size in tokens."""
    chars = sum(len(message.text) for message in request.messages)
    return -(-chars // CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(request.messages)


def estimate_completion_tokens(request: Request) -> int:
    """The most tokens the reply may take: `max_tokens`, or a typical reply's size."""
    return request.max_tokens or DEFAULT_COMPLETION_TOKENS


def cost_usd(usage: Usage, price: Price) -> float:
    """What `usage` costs at `price`.

    Prompt tokens served from the vendor's cache cost the cached rate (the input
    rate when the price has none), the other prompt tokens the input rate, and
    every completion token, reasoning included, the output rate.
    """
    cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
    cached_rate = price.input_per_mtok
    if price.cached_input_per_mtok is not None:
        cached_rate = price.cached_input_per_mtok
    return (
        (usage.prompt_tokens - cached) * price.input_per_mtok
        + cached * cached_rate
        + usage.completion_tokens * price.output_per_mtok
    ) / TOKENS_PER_MILLION


def priced_reply(
    response: Response,
    vendor: VendorConfig,
    model: str,
    *,
    fallback_per_mtok: float | None = None,
) -> tuple[Response, bool]:
    """`response` with the cost to record for it, and False when nothing prices `model`.

    A positive `cost_usd` the vendor object put on the reply stands. Otherwise
    the price is looked up again with `fallback_per_mtok` (the vendor's
    `cost_optimization.vendor_costs` entry, which the vendor object does not
    know), so a recorded 0 is a price of 0, and an unpriced call says so.
    """
    if response.cost_usd > 0:
        return response, True
    price = price_for(vendor, model, fallback_per_mtok=fallback_per_mtok)
    if price is None:
        return response, False
    cost = cost_usd(response.usage, price)
    if cost != response.cost_usd:
        response = response.model_copy(update={"cost_usd": cost})
    return response, True
