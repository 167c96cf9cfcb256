"""The vendor types we ship, by configuration type name."""

from __future__ import annotations

from dispatcher.vendors.anthropic import AnthropicVendor
from dispatcher.vendors.azure import AzureOpenAIVendor
from dispatcher.vendors.bedrock import BedrockVendor
from dispatcher.vendors.cohere import CohereVendor
from dispatcher.vendors.gemini import GeminiVendor
from dispatcher.vendors.mock import MockVendor
from dispatcher.vendors.ollama import OllamaVendor
from dispatcher.vendors.openai import OpenAIVendor
from dispatcher.vendors.openai_compatible import OpenAICompatibleVendor

__all__ = ["BUILTIN_FACTORIES"]

BUILTIN_FACTORIES = {
    "anthropic": AnthropicVendor,
    "azure": AzureOpenAIVendor,
    "bedrock": BedrockVendor,
    "cohere": CohereVendor,
    "gemini": GeminiVendor,
    "mock": MockVendor,
    "ollama": OllamaVendor,
    "openai": OpenAIVendor,
    "openai_compatible": OpenAICompatibleVendor,
}
