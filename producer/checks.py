"""What a client accepts: requests validated with every problem named, and idempotency keys.

Nothing is written for a request that fails here: `validated` raises
`InvalidRequest` listing each problem with its path in the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from dispatcher.config.problems import describe
from dispatcher.errors import InvalidRequest
from dispatcher.models import Request
from dispatcher.state.idempotency import check_idempotency_key

__all__ = ["check_key", "streaming_request", "validated"]


def validated(request: Request | Mapping[str, Any]) -> Request:
    """`request` as a `Request`; raises `InvalidRequest` listing every problem with its path."""
    if isinstance(request, Request):
        return request
    if not isinstance(request, Mapping):
        raise TypeError(f"a request is a Request or a dict, not {type(request).__name__}")
    try:
        return Request.model_validate(dict(request))
    except ValidationError as exc:
        problems = describe(exc)
        count = len(problems)
        heading = f"invalid request ({count} problem{'s' if count != 1 else ''})"
        raise InvalidRequest("\n  ".join([heading + ":", *problems])) from None


def check_key(idempotency_key: str) -> None:
    """An idempotency key the dispatcher can keep; `InvalidRequest` naming what is wrong."""
    try:
        check_idempotency_key(idempotency_key)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def streaming_request(request: Request | Mapping[str, Any]) -> Request:
    """`request` validated, with `stream=True`."""
    if isinstance(request, Request):
        return request.model_copy(update={"stream": True})
    if not isinstance(request, Mapping):
        raise TypeError(f"a request is a Request or a dict, not {type(request).__name__}")
    return validated({**request, "stream": True})
