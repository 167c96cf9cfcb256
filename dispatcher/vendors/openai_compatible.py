"""Servers that speak OpenAI Chat Completions at a base URL of their own.

vLLM, LM Studio, llama.cpp's server, Together, Groq, OpenRouter, Ollama's
`/v1` shim and the like: `POST {base_url}/chat/completions`, replies, SSE
streams and error bodies as OpenAI's. Three differences: the base URL is
required (there is no public default), the key goes where `auth:` in the
configuration says (Bearer by default, nothing when no key is set), and
`max_tokens` keeps its original name, the one these servers document.
"""

from __future__ import annotations

from dispatcher.vendors.openai import OpenAIVendor

__all__ = ["OpenAICompatibleVendor"]


class OpenAICompatibleVendor(OpenAIVendor):
    """Any OpenAI-compatible server at the configured base URL."""

    default_max_tokens_field = "max_tokens"
    base_url_hint = "the URL that /chat/completions is appended to, e.g. http://host:8000/v1"
