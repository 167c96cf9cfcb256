"""How a Bedrock request is authenticated: a Bedrock API key, or AWS SigV4 by botocore.

A Bedrock API key (the vendor's `api_key`, else `AWS_BEARER_TOKEN_BEDROCK`)
goes as `Authorization: Bearer`. Without one, requests are signed with AWS
Signature V4 (service `bedrock`, the vendor's region) by botocore's own
signer, over the exact URL, headers and body sent: we write no cryptography.
botocore is the optional extra `llmdispatcher[bedrock]`, imported only here
and only then; its session finds credentials by the standard chain
(`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, profiles,
container and instance roles), and credentials that expire are refreshed by
botocore as each request is signed. Every secret it hands out is registered
with the redactor before it is used, so no log or error text can show it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import httpx

from dispatcher.config.schema import VendorConfig
from dispatcher.errors import ConfigError
from dispatcher.redaction import register_secret

__all__ = ["BEARER_TOKEN_ENV", "BearerAuth", "BedrockAuth", "SigV4Auth", "bedrock_auth"]

# Where AWS's own SDKs look for a Bedrock API key.
BEARER_TOKEN_ENV = "AWS_BEARER_TOKEN_BEDROCK"  # noqa: S105 - a variable's name, no secret
# The SigV4 service name of bedrock-runtime.
SIGNING_SERVICE = "bedrock"
EXTRA_HINT = "pip install 'llmdispatcher[bedrock]'"


class BedrockAuth:
    """Adds the authentication headers to a request that is otherwise final."""

    def sign(self, request: httpx.Request) -> httpx.Request:
        """`request` with its authentication headers added (the same object)."""
        raise NotImplementedError


class BearerAuth(BedrockAuth):
    """A Bedrock API key, sent as `Authorization: Bearer`."""

    def __init__(self, token: str) -> None:
        register_secret(token)
        self._token = token

    def sign(self, request: httpx.Request) -> httpx.Request:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request


class SigV4Auth(BedrockAuth):
    """AWS Signature V4 by botocore's signer, with credentials from botocore's chain."""

    def __init__(self, credentials: Any, region: str) -> None:
        self._credentials = credentials
        self.region = region
        self._auth = importlib.import_module("botocore.auth")
        self._awsrequest = importlib.import_module("botocore.awsrequest")

    def sign(self, request: httpx.Request) -> httpx.Request:
        # Frozen per request: refreshable credentials renew here when they near expiry.
        frozen = self._credentials.get_frozen_credentials()
        for secret in (frozen.secret_key, frozen.token, frozen.access_key):
            register_secret(secret)
        aws = self._awsrequest.AWSRequest(
            method=request.method,
            url=str(request.url),
            headers=dict(request.headers),
            data=request.content,
        )
        self._auth.SigV4Auth(frozen, SIGNING_SERVICE, self.region).add_auth(aws)
        # Authorization, X-Amz-Date and (temporary credentials) X-Amz-Security-Token.
        for name, value in aws.headers.items():
            if request.headers.get(name) != value:
                request.headers[name] = value
        return request


def bedrock_auth(
    name: str, config: VendorConfig, env: Mapping[str, str], region: str
) -> BedrockAuth:
    """The vendor's auth: its key or `AWS_BEARER_TOKEN_BEDROCK` as Bearer, else SigV4.

    Raises:
        ConfigError: no key and no botocore (the extra is not installed), or
            botocore finds no AWS credentials.
    """
    if config.api_key is not None:
        return BearerAuth(config.api_key.get_secret_value())
    token = env.get(BEARER_TOKEN_ENV)
    if token:
        return BearerAuth(token)
    where = f"vendors.{name}"
    try:
        session_module = importlib.import_module("botocore.session")
    except ImportError:
        raise ConfigError(
            [
                f"{where}: Bedrock needs an API key (api_key, or {BEARER_TOKEN_ENV}) or AWS "
                f"SigV4 signing, which needs botocore: {EXTRA_HINT}"
            ]
        ) from None
    credentials = session_module.get_session().get_credentials()
    if credentials is None:
        raise ConfigError(
            [
                f"{where}: no AWS credentials found (environment, profile, container or "
                f"instance role), and no Bedrock API key ({BEARER_TOKEN_ENV})"
            ]
        )
    return SigV4Auth(credentials, region)
