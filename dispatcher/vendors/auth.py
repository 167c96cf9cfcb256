"""How a request carries the vendor's key: the seed design's auth options.

First-party vendors use their own fixed scheme (Bearer, `x-api-key`,
`api-key`, `x-goog-api-key`); custom and OpenAI-compatible vendors choose one
with `auth:` in the configuration: bearer, a named header, a query parameter,
basic auth (the key is the password), or none.
"""

from __future__ import annotations

import base64

import httpx

from dispatcher.config.schema import AuthConfig, VendorConfig

__all__ = ["auth_headers_and_params", "request_headers"]


def auth_headers_and_params(
    config: VendorConfig, default: AuthConfig | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """The headers and query parameters that authenticate a request to this vendor."""
    if config.api_key is None:
        return {}, {}
    key = config.api_key.get_secret_value()
    auth = config.auth or default or AuthConfig()
    if auth.scheme == "bearer":
        return {"Authorization": f"Bearer {key}"}, {}
    if auth.scheme == "header" and auth.header_name:
        return {auth.header_name: key}, {}
    if auth.scheme == "query" and auth.query_param:
        return {}, {auth.query_param: key}
    if auth.scheme == "basic" and auth.username:
        token = base64.b64encode(f"{auth.username}:{key}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}, {}
    return {}, {}


def request_headers(config: VendorConfig, auth: dict[str, str]) -> httpx.Headers:
    """JSON content headers, the configured extra headers, then the auth headers."""
    headers = httpx.Headers({"Content-Type": "application/json", "Accept": "application/json"})
    headers.update(config.headers)
    headers.update(auth)
    return headers
