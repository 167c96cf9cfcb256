"""The HTTP front's configuration (`llmdispatch serve`): its API keys and their tenants.

In the configuration file::

    server:
      api_keys:
        - key: ${ACME_API_KEY}
          tenant: acme
        - key: ${GLOBEX_API_KEY}
          tenant: globex

or in the environment, `LLMDISPATCH_SERVER_API_KEYS=key:tenant,key:tenant`
(both sources together: the environment's keys are added to the file's). A
tenant name is what its requests carry as `user`, so tenant limits and
per-tenant statistics apply to them, and what batches and files are filed
under. With no key at all the server listens on loopback only.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Self

from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, StringConstraints, model_validator

from dispatcher.models import StrictModel

__all__ = ["DEFAULT_MAX_FILE_BYTES", "ApiKey", "ServerConfig", "key_digest", "parse_key_list"]

# OpenAI's Batch input file limit (200 MB); lower it with server.max_file_bytes.
DEFAULT_MAX_FILE_BYTES = 200 * 1024 * 1024
# A key shorter than this is a typo or a placeholder, not a credential.
MIN_KEY_CHARS = 16

TenantName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")]


def key_digest(key: str) -> bytes:
    """The SHA-256 of a key: what is compared and kept, never the key itself."""
    return hashlib.sha256(key.encode()).digest()


class ApiKey(StrictModel):
    """One key the HTTP front accepts, and the tenant its requests belong to."""

    model_config = ConfigDict(frozen=True)

    key: SecretStr
    tenant: TenantName

    @model_validator(mode="after")
    def _long_enough(self) -> Self:
        if len(self.key.get_secret_value()) < MIN_KEY_CHARS:
            raise ValueError(
                f"key: at least {MIN_KEY_CHARS} characters (tenant {self.tenant!r}); "
                "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return self


class ServerConfig(StrictModel):
    """`server:` in the configuration file."""

    model_config = ConfigDict(frozen=True)

    api_keys: list[ApiKey] = Field(default_factory=list)
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024,
        gt=0,
        description="Largest chat request body the front reads, in bytes.",
    )
    max_file_bytes: int = Field(
        default=DEFAULT_MAX_FILE_BYTES, gt=0, description="Largest file `POST /v1/files` takes."
    )
    file_ttl_s: int = Field(
        default=7 * 86_400, gt=0, description="How long an uploaded or output file is kept."
    )

    # Each key's digest and tenant, computed once: what every request is compared with.
    _digests: list[tuple[bytes, str]] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _keys_are_unique(self) -> Self:
        digests = [(key_digest(k.key.get_secret_value()), k.tenant) for k in self.api_keys]
        if len({digest for digest, _ in digests}) != len(digests):
            raise ValueError("api_keys: the same key is listed twice")
        self._digests = digests
        return self

    def tenant_of(self, presented: str) -> str | None:
        """The tenant of `presented`, compared in constant time with every key; None: unknown."""
        digest = key_digest(presented)
        found = None
        for known, tenant in self._digests:
            # Every key is compared, so the time taken says nothing of which one matched.
            if hmac.compare_digest(digest, known):
                found = tenant
        return found


def parse_key_list(text: str) -> list[ApiKey]:
    """`key:tenant,key:tenant` (LLMDISPATCH_SERVER_API_KEYS) as keys.

    Raises:
        ValueError: an entry without a tenant, or a key too short; never showing the key.
    """
    keys = []
    for number, entry in enumerate((e.strip() for e in text.split(",")), start=1):
        if not entry:
            continue
        key, sep, tenant = entry.rpartition(":")
        if not sep or not key or not tenant:
            raise ValueError(f"entry {number}: write key:tenant (the tenant after the last ':')")
        keys.append(ApiKey(key=SecretStr(key), tenant=tenant))
    return keys
