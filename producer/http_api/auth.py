"""Who is calling: the API key of `Authorization: Bearer` (or `api-key`), and its tenant.

Keys come from `server.api_keys` and LLMDISPATCH_SERVER_API_KEYS
(`dispatcher.config.server`); each is compared as a SHA-256 digest, in
constant time, against every configured one. With no key configured the
front takes every request as tenant-less (it then listens on loopback only).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request as HttpRequest

from dispatcher.config.server import ServerConfig

__all__ = ["Caller", "NotAuthenticated", "caller_of"]

_BEARER = "bearer "


class NotAuthenticated(Exception):
    """No key, or a key no tenant has: a 401 in OpenAI's words."""


@dataclass(frozen=True)
class Caller:
    """The tenant a request is made for (None when the front has no keys)."""

    tenant: str | None


def caller_of(request: HttpRequest, server: ServerConfig) -> Caller:
    """The caller of `request`.

    Raises:
        NotAuthenticated: keys are configured and the request carries none of them.
    """
    if not server.api_keys:
        return Caller(None)
    caller = Caller(_tenant(request, server))
    # For the metrics: the ASGI scope's state outlives the route (Starlette's `request.state`).
    request.state.tenant = caller.tenant
    return caller


def _tenant(request: HttpRequest, server: ServerConfig) -> str:
    header = request.headers.get("authorization", "")
    presented = (
        header[len(_BEARER) :].strip()
        if header[: len(_BEARER)].lower() == _BEARER
        else request.headers.get("api-key", "")
    )
    if not presented:
        raise NotAuthenticated(
            "You didn't provide an API key. Send it as Authorization: Bearer YOUR_KEY "
            "(the OpenAI SDKs do, from api_key or OPENAI_API_KEY)."
        )
    tenant = server.tenant_of(presented)
    if tenant is None:
        raise NotAuthenticated(
            "Incorrect API key provided. Use a key from server.api_keys or "
            "LLMDISPATCH_SERVER_API_KEYS."
        )
    return tenant
