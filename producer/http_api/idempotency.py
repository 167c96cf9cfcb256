"""`Idempotency-Key`: a client's retries of one POST make one job (or one batch).

A request that carries the header is submitted with an idempotency key made of
the caller's tenant and the header's value, so a retry with the same header
(after a dropped connection, a 5xx, a timeout) names the job or batch the first
attempt made, and writes nothing; another tenant's same value names its own.
Keys live for the job TTL, as `Client.submit`'s do.
"""

from __future__ import annotations

import hashlib

from fastapi import Request as HttpRequest

from dispatcher.errors import InvalidRequest
from dispatcher.state.idempotency import check_idempotency_key

__all__ = ["IDEMPOTENCY_HEADER", "MAX_HEADER_CHARS", "idempotency_key_of"]

IDEMPOTENCY_HEADER = "idempotency-key"
MAX_HEADER_CHARS = 200  # within the dispatcher's 256, with room for the tenant's digest


def idempotency_key_of(http: HttpRequest, tenant: str | None) -> str | None:
    """The dispatcher's idempotency key for this request; None without the header.

    Raises:
        InvalidRequest: the header is empty, too long or holds control characters.
    """
    value = http.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    if not 0 < len(value) <= MAX_HEADER_CHARS:
        raise InvalidRequest(f"Idempotency-Key must be 1 to {MAX_HEADER_CHARS} characters")
    # The tenant as a short digest: any name fits, and none can pose as another's prefix.
    scope = hashlib.sha256((tenant or "").encode()).hexdigest()[:16]
    key = f"http:{scope}:{value}"
    try:
        return check_idempotency_key(key)
    except ValueError:
        raise InvalidRequest("Idempotency-Key must not contain control characters") from None
