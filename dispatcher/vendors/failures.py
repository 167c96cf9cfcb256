"""What every vendor's failures have in common: the status table and Retry-After.

Each wire format reads its own error body and handles its own special cases
(OpenAI's `insufficient_quota`, Gemini's auth-as-400, ...), then falls back on
`error_for_status`, which follows the common table of the wire-format notes:

| status                  | error                 |
| ----------------------- | --------------------- |
| 401, 403, 498           | VendorAuthError       |
| 402                     | VendorQuotaExceeded   |
| 408, 504                | VendorTimeout         |
| 409, 500, 502, 503, 529 and other 5xx but 501 | VendorUnavailable |
| 429                     | VendorRateLimited     |
| any other 4xx, and 501  | InvalidRequest        |

Vendor text is masked (`redaction.redact`) before it is cut to length: a key
cut in two is no longer recognisable, and the half that is kept would survive.
"""

from __future__ import annotations

import json
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from dispatcher.errors import (
    DispatcherError,
    InvalidRequest,
    VendorAuthError,
    VendorQuotaExceeded,
    VendorRateLimited,
    VendorTimeout,
    VendorUnavailable,
)
from dispatcher.redaction import redact

__all__ = ["error_for_status", "json_or_none", "parse_duration_s", "retry_after_s", "summary"]

# Vendor error bodies can be long (HTML error pages); a message keeps the start.
MAX_MESSAGE_CHARS = 300


def retry_after_s(headers: httpx.Headers, now: float | None = None) -> float | None:
    """The wait the vendor asked for: `retry-after-ms`, then `retry-after` (seconds or a date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration_s(text: str) -> float | None:
    """Durations as vendors write them: `23s` (Gemini), `6m0s` or `17ms` (OpenAI)."""
    parts = _DURATION_PART.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def json_or_none(body: str) -> Any:
    """The body parsed as JSON, or None when it is not JSON."""
    try:
        return json.loads(body)
    except ValueError:
        return None


def summary(body: str) -> str:
    """The start of a body that is not JSON, on one line, with secrets masked."""
    text = redact(" ".join(body.split()))
    return text[:MAX_MESSAGE_CHARS] + ("..." if len(text) > MAX_MESSAGE_CHARS else "")


def error_for_status(
    status: int,
    message: str,
    *,
    vendor: str,
    retry_after: float | None = None,
) -> DispatcherError:
    """The typed error for an HTTP status, by the common table."""
    shown = redact(message)[:MAX_MESSAGE_CHARS]
    text = f"{vendor} answered HTTP {status}: {shown or '(no message)'}"
    if status == 429:
        return VendorRateLimited(text, retry_after_s=retry_after, vendor=vendor, status_code=status)
    if status in (401, 403, 498):
        return VendorAuthError(
            text + " (check the API key and its permissions)", vendor=vendor, status_code=status
        )
    if status == 402:
        return VendorQuotaExceeded(text, vendor=vendor, status_code=status)
    if status in (408, 504):
        return VendorTimeout(text, vendor=vendor, status_code=status)
    if status == 409 or (status >= 500 and status != 501):
        return VendorUnavailable(text, vendor=vendor, status_code=status)
    return InvalidRequest(text, vendor=vendor, status_code=status)
