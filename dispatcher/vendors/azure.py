"""Azure OpenAI: the OpenAI wire format behind Azure's URLs and its `api-key` header.

Two URL forms. Classic: `POST {endpoint}/openai/deployments/{deployment}/chat/completions
?api-version=...`, where the deployment (the route's model name) picks the model, so the
body carries no `model`, and a missing api-version is a 404. The v1 surface, chosen by an
endpoint ending in `/openai/v1`: `POST {endpoint}/chat/completions` with the deployment
name as the body's `model` and no api-version. The key goes in `api-key`; `auth:` in the
configuration may switch to `bearer` for Microsoft Entra ID tokens. Older api-versions
know only `max_tokens`, so that is the default field name. Bodies, replies, streams
(Azure's filter-only chunks included) and errors (content-filter 400s included) are the
OpenAI module's.
"""

from __future__ import annotations

from dispatcher.config.schema import AuthConfig
from dispatcher.vendors.auth import auth_headers_and_params
from dispatcher.vendors.base import path_segment
from dispatcher.vendors.openai import OpenAIVendor

__all__ = ["DEFAULT_API_VERSION", "AzureOpenAIVendor"]

# The GA data-plane version the wire-format notes were written against; preview
# versions carry a `-preview` suffix and are opted into with `api_version`.
DEFAULT_API_VERSION = "2024-10-21"
# An endpoint ending here speaks the v1 surface: no api-version, deployment in `model`.
V1_SUFFIX = "/openai/v1"
# Azure's own key header, used unless the configuration names another scheme.
API_KEY_AUTH = AuthConfig(scheme="header", header_name="api-key")


class AzureOpenAIVendor(OpenAIVendor):
    """An Azure OpenAI resource; the route's model name is the deployment name."""

    default_max_tokens_field = "max_tokens"
    base_url_hint = "https://<resource>.openai.azure.com, or .../openai/v1 for the v1 API"

    @property
    def is_v1(self) -> bool:
        """True when the endpoint is the v1 surface (`.../openai/v1`)."""
        return self.base_url.endswith(V1_SUFFIX)

    @property
    def api_version(self) -> str:
        """The api-version the classic URLs carry."""
        return self.config.api_version or DEFAULT_API_VERSION

    def auth(self) -> tuple[dict[str, str], dict[str, str]]:
        """The `api-key` header, unless `auth:` in the configuration says otherwise."""
        return auth_headers_and_params(self.config, default=API_KEY_AUTH)

    def query_params(self) -> dict[str, str]:
        """Classic URLs need `api-version` (a 404 without it); the v1 surface takes none."""
        return {} if self.is_v1 else {"api-version": self.api_version}

    def chat_url(self, model: str) -> str:
        if self.is_v1:
            return f"{self.base_url}/chat/completions"
        return f"{self.base_url}/openai/deployments/{path_segment(model)}/chat/completions"

    def body_model(self, model: str) -> str | None:
        # Classic URLs name the deployment in the path; v1 names it in the body.
        return model if self.is_v1 else None

    def models_url(self) -> str:
        return f"{self.base_url}/models" if self.is_v1 else f"{self.base_url}/openai/models"
