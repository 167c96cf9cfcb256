"""A cap on request bodies, checked as the bytes arrive (a pure ASGI middleware).

A body over the cap is answered 413 in OpenAI's error shape before the route
reads it whole: a declared Content-Length over the cap at once, a chunked
body as soon as its bytes pass the cap (the app is then told its client has
gone, and what it would answer is dropped). Nothing is submitted or written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["BodyLimit"]

Scope = dict[str, Any]
Message = dict[str, Any]


class BodyLimit:
    """Refuse bodies over `limit_for(path)` bytes with a 413."""

    def __init__(self, app: Any, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, limit)
            return
        received = 0
        started = False
        refused = False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message: Message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer now, and tell the app its client has gone: whatever it
                    # answers (its error handlers included) is dropped below.
                    refused = True
                    if not started:
                        await _refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, watched)


async def _refuse(send: Any, limit: int) -> None:
    body = json.dumps(
        {
            "error": {
                "message": f"the request body is larger than this server takes ({limit:,} bytes)",
                "type": "invalid_request_error",
                "param": None,
                "code": "request_too_large",
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
