"""The vendor types we ship, by configuration type name."""

from __future__ import annotations

from dispatcher.vendors.anthropic import AnthropicVendor
from dispatcher.vendors.cohere import CohereVendor
from dispatcher.vendors.gemini import GeminiVendor
from dispatcher.vendors.openai import OpenAIVendor

__all__ = ["BUILTIN_FACTORIES"]

BUILTIN_FACTORIES = {
    "anthropic": AnthropicVendor,
    "cohere": CohereVendor,
    "gemini": GeminiVendor,
    "openai": OpenAIVendor,
}
