"""Token estimates before a call, and cost in USD from prices per million tokens.

Estimates feed the router's cost optimisation and (later) the token-per-minute
limiter; the real cost of a job is computed from the vendor's reported usage.
"""

from __future__ import annotations

from dispatcher.config.schema import Price
from dispatcher.models import Request, Usage

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_COMPLETION_TOKENS",
    "Price",
    "cost_usd",
    "estimate_completion_tokens",
    "estimate_prompt_tokens",
]

# English text averages about four characters per token in the GPT and Claude
# tokenizers; a tokenizer-free estimate is enough for routing and limits.
CHARS_PER_TOKEN = 4
# Chat templates add a few tokens per message (role markers, separators).
TOKENS_PER_MESSAGE = 4
# Reply length assumed when a request sets no max_tokens: a typical chat answer.
DEFAULT_COMPLETION_TOKENS = 512
TOKENS_PER_MILLION = 1_000_000


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
