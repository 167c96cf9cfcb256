"""The stand-in vendor's replies: the deterministic answer, and how any reply is sent.

Deterministic, so tests can assert exact values (the same rules as
`dispatcher.vendors.mock`, whose `compose_answer` this uses):

- the reply is "echo: " + the text of the last user message; a stream sends one
  word per content event, leading whitespace included, unless the server's
  `chunk_count` spreads the words over fewer events;
- prompt tokens are the whitespace-separated words of all input text (system
  included), completion tokens the words of the reply actually returned;
- the vendor's max-token field truncates the reply to that many words (the
  vendor's "length" reason); a stop sequence cuts the reply just before it;
- tools, tool results, JSON formats and images follow `chat_rules` (a tool
  call, "echo: " + the tool result, JSON built from the schema, "[N image]").

Each wire format (`openai`, `anthropic`, `gemini`, `ollama`, `cohere`) is a
`WireFormat`: it reads a call, and writes a reply, a stream and errors in its
vendor's shapes. `send_whole` and `send_stream` put them on the wire, paced and
cut short as a fault asks.
"""

from __future__ import annotations

import asyncio
import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from dispatcher.models import FinishReason
from dispatcher.vendors.mock import (
    REPLY_PREFIX,
    compose_answer,
    count_words,
    split_into_chunks,
    split_words,
)
from producer.cli.tools.standin.chat_rules import ChatAsk, PlannedCall, planned_call, planned_text
from producer.cli.tools.standin.faults import FAULT_HEADER, Fault

__all__ = [
    "INJECTED",
    "Call",
    "Json",
    "Refused",
    "Reply",
    "Stream",
    "WireFormat",
    "argument_pieces",
    "as_list",
    "cumulative_words",
    "drop_connection",
    "dumps",
    "echoed_request",
    "ending",
    "reply_to",
    "send_stream",
    "send_whole",
    "text_of",
]

Json = dict[str, Any]
# Why an injected error happened, in its message: a test can tell it from a real one.
INJECTED = f"(injected by {FAULT_HEADER} or the stand-in's failure rate)"
# Header names an echoing server repeats first, as the credentials it was given.
_CREDENTIAL_HEADER = re.compile(r"(?i)authorization|api-?key|token|auth")


@dataclass(frozen=True)
class Call:
    """What the stand-in must answer: the prompt, the model and the limits asked for."""

    model: str
    messages: list[tuple[str, str]]  # (role, text), system included
    stream: bool
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    include_usage: bool = False  # OpenAI's stream_options.include_usage
    ask: ChatAsk = field(default_factory=ChatAsk)  # tools, formats, images (chat_rules)


@dataclass(frozen=True)
class Reply:
    """The reply actually returned, as stream chunks, with its counts and why it ended."""

    text: str
    chunks: list[str]
    prompt_tokens: int
    completion_tokens: int
    truncated: bool  # by the max-token field
    stopped: bool  # by a stop sequence (and not truncated)
    tool_call: PlannedCall | None = None  # the call made instead of text (chat_rules)

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens


def reply_to(call: Call, chunk_count: int | None = None) -> Reply:
    """The deterministic reply to `call`, cut into `chunk_count` chunks (None: one per word)."""
    if not call.ask.plain:
        return _shaped_reply(call, chunk_count)
    answer = compose_answer(call.messages, max_tokens=call.max_tokens, stop=call.stop)
    truncated = answer.finish_reason is FinishReason.LENGTH
    stopped = False
    if call.stop and not truncated:
        last_user = next((text for role, text in reversed(call.messages) if role == "user"), "")
        stopped = any(s and s in REPLY_PREFIX + last_user for s in call.stop)
    return Reply(
        text=answer.text,
        chunks=split_into_chunks(answer.text, chunk_count),
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        truncated=truncated,
        stopped=stopped,
    )


def _shaped_reply(call: Call, chunk_count: int | None) -> Reply:
    """A reply that `chat_rules` shapes: a tool call, or its text, limited as any reply is."""
    prompt_tokens = sum(count_words(text) for _, text in call.messages)
    planned = planned_call(call.ask)
    if planned is not None:
        return Reply("", [], prompt_tokens, planned.completion_tokens, False, False, planned)
    text = planned_text(call.ask) or ""
    cuts = [index for index in (text.find(s) for s in call.stop if s) if index >= 0]
    stopped = bool(cuts)
    if cuts:
        text = text[: min(cuts)]
    words = split_words(text)
    truncated = call.max_tokens is not None and len(words) > call.max_tokens
    if truncated:
        text = "".join(words[: call.max_tokens])
    return Reply(
        text=text,
        chunks=split_into_chunks(text, chunk_count),
        prompt_tokens=prompt_tokens,
        completion_tokens=count_words(text),
        truncated=truncated,
        stopped=stopped and not truncated,
    )


class Refused(Exception):
    """A call the real API would refuse, with the response it would send."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass(frozen=True)
class Stream:
    """A streamed reply's bytes: what opens it, one event per chunk, how it ends or fails."""

    opening: bytes
    events: list[bytes]
    closing: bytes
    error: bytes  # the vendor's in-stream error, for midstream-error
    content_type: str = "text/event-stream"


class WireFormat(ABC):
    """One vendor's wire format, server side: its calls in, its replies and errors out."""

    vendor: str  # the name requests are recorded under
    request_id_header = "x-request-id"

    @abstractmethod
    def parse(self, request: web.Request, body: Json) -> Call:
        """The call a request makes.

        Raises:
            Refused: a request the real API would refuse (a 400 naming what is wrong).
        """

    @abstractmethod
    def error(self, status: int, message: str, *, retry_after_s: float) -> web.Response:
        """An error with this status in the vendor's shape (a 429 carries the wait)."""

    def injected(self, fault: Fault, retry_after_s: float) -> web.Response:
        """The error a refusing fault asks for; formats override it for their special cases."""
        if fault.quota:
            return self.error(429, f"quota exceeded {INJECTED}", retry_after_s=retry_after_s)
        status = fault.status or 500
        return self.error(status, f"HTTP {status} {INJECTED}", retry_after_s=retry_after_s)

    @abstractmethod
    def whole(self, call: Call, reply: Reply, request_id: str) -> Json:
        """The body of a whole (non-streamed) reply."""

    @abstractmethod
    def stream(self, call: Call, reply: Reply, request_id: str) -> Stream:
        """The bytes of a streamed reply."""


def text_of(content: Any, separator: str = "\n") -> str:
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return separator.join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type", "text") == "text"
        )
    return ""


def as_list(value: Any) -> list[str]:
    """A stop field as a list: None, one string or a list of them."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def dumps(data: Json) -> bytes:
    """Compact JSON, as the vendors send it."""
    return json.dumps(data, separators=(",", ":")).encode()


def echoed_request(request: web.Request) -> str:
    """The request repeated back verbatim: its credentials, then its line and every header."""
    credentials = [
        f"{name}: {value}"
        for name, value in request.headers.items()
        if _CREDENTIAL_HEADER.search(name)
    ]
    credentials += [f"{name}={value}" for name, value in request.query.items() if name == "key"]
    return (
        f"request rejected; credentials received: {'; '.join(credentials) or 'none'}; "
        f"request: {request.method} {request.path_qs}; "
        f"headers: {json.dumps(dict(request.headers.items()))}"
    )


def drop_connection(request: web.Request) -> None:
    """Close the socket at once, whatever was sent: the client sees a broken body."""
    if request.transport is not None:
        request.transport.abort()


async def send_whole(
    request: web.Request, body: Json, *, fault: Fault, headers: dict[str, str]
) -> web.StreamResponse:
    """A whole reply (or its first half, then a dropped connection, for midstream-drop)."""
    data = dumps(body)
    headers = {"Content-Type": "application/json", **headers}
    if not fault.drop:
        return web.Response(body=data, headers=headers)
    response = web.StreamResponse(headers=headers)
    response.content_length = len(data)
    await response.prepare(request)
    await response.write(data[: len(data) // 2])
    drop_connection(request)
    return response


async def send_stream(
    request: web.Request,
    stream: Stream,
    *,
    fault: Fault,
    delay_s: float,
    headers: dict[str, str],
) -> web.StreamResponse:
    """A streamed reply, `delay_s` between events, cut after half its events for midstream faults.

    The opening rides with the first event; the closing leaves with the end of the body.
    """
    writes = list(stream.events) or [b""]
    writes[0] = stream.opening + writes[0]
    if fault.drop or fault.stream_error:
        writes = writes[: max(1, len(stream.events) // 2)]
    if fault.stream_error:
        ending = stream.error
    elif fault.drop:
        ending = b""
    else:
        ending = stream.closing
    response = web.StreamResponse(
        headers={"Content-Type": stream.content_type, "Cache-Control": "no-cache", **headers}
    )
    await response.prepare(request)
    if delay_s <= 0:
        writes, ending = [], b"".join(writes) + ending
    for index, data in enumerate(writes):
        if index:
            await asyncio.sleep(delay_s)
        await response.write(data)
    if fault.drop:
        await response.write(ending)
        drop_connection(request)
        return response
    # The last events and the end of the chunked body leave in one send.
    await response.write_eof(ending)
    return response


def cumulative_words(chunks: list[str]) -> list[int]:
    """The words sent so far after each chunk (for formats whose usage grows per event)."""
    counts, total = [], 0
    for chunk in chunks:
        total += count_words(chunk)
        counts.append(total)
    return counts


def argument_pieces(arguments: str) -> list[str]:
    """A call's JSON in three pieces (fewer when shorter), split anywhere, as models stream it."""
    size = max(1, -(-len(arguments) // 3))
    return [arguments[start : start + size] for start in range(0, len(arguments), size)]


def ending(reply: Reply, *, tool: str, length: str, stop: str, end: str) -> str:
    """Why `reply` ended, in a vendor's words: a tool call, the token limit, a stop
    sequence, or the natural end."""
    if reply.tool_call is not None:
        return tool
    if reply.truncated:
        return length
    return stop if reply.stopped else end
