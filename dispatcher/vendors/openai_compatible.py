"""Servers that speak OpenAI Chat Completions at a base URL of their own.

vLLM, LM Studio, llama.cpp's server, Together, Groq, OpenRouter, Ollama's
`/v1` shim and the like: `POST {base_url}/chat/completions`, replies, SSE
streams and error bodies as OpenAI's. Three differences: the base URL is
required (there is no public default), the key goes where `auth:` in the
configuration says (Bearer by default, nothing when no key is set), and
`max_tokens` keeps its original name, the one these servers document.
"""

from __future__ import annotations

import httpx

from dispatcher.config_schema import VendorConfig
from dispatcher.errors import ConfigError
from dispatcher.vendors.openai import OpenAIVendor

__all__ = ["OpenAICompatibleVendor"]


class OpenAICompatibleVendor(OpenAIVendor):
    """Any OpenAI-compatible server at the configured base URL."""

    default_max_tokens_field = "max_tokens"

    def __init__(
        self, name: str, config: VendorConfig, client: httpx.AsyncClient | None = None
    ) -> None:
        if not config.endpoint:
            raise ConfigError(
                [
                    f"vendors.{name}.base_url: is required for an OpenAI-compatible vendor "
                    "(the URL that /chat/completions is appended to, e.g. http://host:8000/v1)"
                ]
            )
        super().__init__(name, config, client)
