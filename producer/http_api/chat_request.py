"""A Chat Completions request body as our `Request`, or the OpenAI error naming what is wrong.

The body is everything `dispatcher.models.Request` models (OpenAI's fields,
plus ours: `vendor`, `priority`, `timeout_s`, `extra_body`, ..., which an
OpenAI SDK sends through its own `extra_body`). OpenAI's spellings we fold
in: `max_completion_tokens` is `max_tokens`; `stream_options.include_usage`
asks for the usage chunk; `n` may only be 1. Any other field is refused with
`invalid_request_error` and its name as `param`. With API keys configured the
key's tenant is the request's `user`, whatever the body says, so tenant limits
and statistics cannot be dodged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from dispatcher.models import Request

__all__ = ["BadChatRequest", "ChatCall", "chat_call"]


class BadChatRequest(Exception):
    """A body the API refuses: the message and the field (`param`) at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class ChatCall:
    """What a chat body asks: the request, and how to answer a stream."""

    request: Request
    include_usage: bool = False
    tenant_bound: bool = False  # the request's `user` is the caller's tenant


def _param(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as OpenAI writes a param: `messages[0].content`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def chat_call(body: Any, tenant: str | None) -> ChatCall:
    """The request a Chat Completions body makes.

    Raises:
        BadChatRequest: the body is no object, a field is unknown or invalid.
    """
    if not isinstance(body, dict):
        raise BadChatRequest("the request body must be a JSON object")
    fields = dict(body)
    options = fields.pop("stream_options", None)
    include_usage = False
    if options is not None:
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise BadChatRequest(
                "stream_options: only include_usage (a boolean) is supported", "stream_options"
            )
        if not fields.get("stream"):
            raise BadChatRequest(
                "stream_options: only allowed when stream is true", "stream_options"
            )
        include_usage = bool(options.get("include_usage"))
    if "max_completion_tokens" in fields:
        if fields.get("max_tokens") is not None:
            raise BadChatRequest(
                "max_tokens and max_completion_tokens may not both be set", "max_tokens"
            )
        fields["max_tokens"] = fields.pop("max_completion_tokens")
    n = fields.pop("n", None)
    if n not in (None, 1):
        raise BadChatRequest("n: only 1 choice per request is supported", "n")
    if tenant is not None:
        fields["user"] = tenant
    try:
        request = Request.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = _param(first["loc"])
        message = f"{param}: {first['msg']}" if param else first["msg"]
        message = message.replace("Value error, ", "")
        others = len(exc.errors()) - 1
        if others:
            message += f" (and {others} more problem{'s' if others > 1 else ''})"
        raise BadChatRequest(message, param or None) from None
    return ChatCall(request, include_usage, tenant_bound=tenant is not None)
