"""Bedrock's failures as our errors: by AWS's error type, else by HTTP status.

The type is the `x-amzn-ErrorType` header (`Name:namespace`), else the body's
`__type` (`namespace#Name`); the text is the body's `message`. Exception
messages inside a ConverseStream name the same types in lower camel case
(`throttlingException`) and are classified the same way.

- ThrottlingException, ServiceQuotaExceededException: `VendorRateLimited`
  (with Retry-After when given);
- ServiceUnavailableException, ModelNotReadyException, InternalServerException,
  ModelErrorException, ModelStreamErrorException: `VendorUnavailable`;
- ModelTimeoutException: `VendorTimeout`;
- ValidationException, ResourceNotFoundException (the model): `InvalidRequest`;
- AccessDeniedException, UnrecognizedClientException, signature and token
  errors: `VendorAuthError`;
- anything else: by status (`failures.error_for_status`).
"""

from __future__ import annotations

from typing import Any

import httpx

from dispatcher.errors import (
    DispatcherError,
    InvalidRequest,
    VendorAuthError,
    VendorRateLimited,
    VendorTimeout,
    VendorUnavailable,
)
from dispatcher.redaction import redact
from dispatcher.vendors.failures import (
    MAX_MESSAGE_CHARS,
    error_for_status,
    json_or_none,
    retry_after_s,
    summary,
)

__all__ = ["ERROR_TYPES", "classified", "classify_error", "message_of"]

# An error type (the exception's name) as the class of error it is.
ERROR_TYPES: dict[str, type[DispatcherError]] = {
    "ThrottlingException": VendorRateLimited,
    "ServiceQuotaExceededException": VendorRateLimited,
    "ServiceUnavailableException": VendorUnavailable,
    "ModelNotReadyException": VendorUnavailable,
    "InternalServerException": VendorUnavailable,
    "ModelErrorException": VendorUnavailable,
    "ModelStreamErrorException": VendorUnavailable,
    "ModelTimeoutException": VendorTimeout,
    "ValidationException": InvalidRequest,
    "ResourceNotFoundException": InvalidRequest,
    "AccessDeniedException": VendorAuthError,
    "UnrecognizedClientException": VendorAuthError,
    "MissingAuthenticationTokenException": VendorAuthError,
    "InvalidSignatureException": VendorAuthError,
    "ExpiredTokenException": VendorAuthError,
    "IncompleteSignatureException": VendorAuthError,
}

# What to try next, by class, for the message.
_ADVICE: dict[type[DispatcherError], str] = {
    VendorAuthError: " (check the key or the AWS credentials, and the model's access)",
    VendorRateLimited: " (retry later, or ask AWS for a higher quota)",
}


def message_of(data: Any) -> str:
    if not isinstance(data, dict):
        return ""
    return str(data.get("message") or data.get("Message") or "")


def _error_type(headers: httpx.Headers, data: Any) -> str:
    """`x-amzn-ErrorType` (`Name:namespace`), else `__type` (`namespace#Name`)."""
    raw = headers.get("x-amzn-errortype") or (
        str(data.get("__type") or "") if isinstance(data, dict) else ""
    )
    return raw.partition(":")[0].rpartition("#")[2]


def classified(
    kind: str, status: int, text: str, vendor: str, retry_after: float | None
) -> DispatcherError:
    cls = ERROR_TYPES.get(kind)
    shown = redact(text)[:MAX_MESSAGE_CHARS]
    if cls is None:
        return error_for_status(
            status if status >= 400 else 500,
            f"{shown} ({kind})" if kind else shown,
            vendor=vendor,
            retry_after=retry_after,
        )
    status_code = status if status >= 400 else None
    message = f"{vendor} answered {kind}"
    message += f" (HTTP {status})" if status_code else ""
    message += f": {shown or '(no message)'}{_ADVICE.get(cls, '')}"
    if kind == "ResourceNotFoundException":
        message += " (the model is not found in this region, or not enabled for the account)"
    if cls is VendorRateLimited:
        return VendorRateLimited(
            message, retry_after_s=retry_after, vendor=vendor, status_code=status_code
        )
    return cls(message, vendor=vendor, status_code=status_code)


def classify_error(status: int, headers: httpx.Headers, body: str, vendor: str) -> DispatcherError:
    """A Converse failure, by its error type (header or body), else by status."""
    data = json_or_none(body)
    text = message_of(data) or ("" if isinstance(data, dict) else summary(body))
    return classified(_error_type(headers, data), status, text, vendor, retry_after_s(headers))
