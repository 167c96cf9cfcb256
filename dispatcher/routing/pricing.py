"""What a call costs: a vendor's price for a model, token estimates, and cost in USD.

Prices are per million tokens, configured per vendor (`prices`, by model name or
glob). Estimates feed the router's cost optimisation and the token-per-minute
limiter; the real cost of a job is computed from the vendor's reported usage.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from dispatcher.config.schema import Price, VendorConfig
from dispatcher.models import Request, Usage

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_COMPLETION_TOKENS",
    "Price",
    "cost_usd",
    "estimate_completion_tokens",
    "estimate_prompt_tokens",
    "price_for",
]

# English text averages about four characters per token in the GPT and Claude
# tokenizers; a tokenizer-free estimate is enough for routing and limits.
CHARS_PER_TOKEN = 4
# Chat templates add a few tokens per message (role markers, separators).
TOKENS_PER_MESSAGE = 4
# Reply length assumed when a request sets no max_tokens: a typical chat answer.
DEFAULT_COMPLETION_TOKENS = 512
TOKENS_PER_MILLION = 1_000_000


def price_for(vendor: VendorConfig, model: str) -> Price | None:
    """`vendor`'s configured price of `model`: an exact entry first, else the first glob match."""
    if model in vendor.prices:
        return vendor.prices[model]
    return next(
        (price for pattern, price in vendor.prices.items() if fnmatchcase(model, pattern)),
        None,
    )


def estimate_prompt_tokens(request: Request) -> int:
    """A tokenizer-free estimate of the prompt's size in tokens."""
    chars = sum(len(message.content) for message in request.messages)
    return -(-chars // CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(request.messages)


def estimate_completion_tokens(request: Request) -> int:
    """The most tokens the reply may take: `max_tokens`, or a typical reply's size."""
    return request.max_tokens or DEFAULT_COMPLETION_TOKENS


def cost_usd(usage: Usage, price: Price) -> float:
    """What `usage` costs at `price`."""
    return (
        usage.prompt_tokens * price.input_per_mtok + usage.completion_tokens * price.output_per_mtok
    ) / TOKENS_PER_MILLION
