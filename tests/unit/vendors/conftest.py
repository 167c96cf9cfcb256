"""Helpers for vendor tests: a recording mock transport and stream bodies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from dispatcher.vendors import StreamDelta


@dataclass
class Recorder:
    """Answers every request with the next queued response and keeps what it was sent."""

    responses: list[httpx.Response] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def last_json(self) -> Any:
        return json.loads(self.last.content)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


@pytest.fixture
def recorder() -> Callable[..., Recorder]:
    """recorder(response, ...) -> a Recorder answering with those responses in turn."""

    def build(*responses: httpx.Response) -> Recorder:
        return Recorder(responses=list(responses))

    return build


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    """A JSON response."""
    return httpx.Response(status, json=body, headers=headers)


def sse_response(events: Iterable[str], *, eol: str = "\n") -> httpx.Response:
    """A complete text/event-stream response; each item is one event's lines."""
    body = "".join(event.replace("\n", eol) + eol + eol for event in events)
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())


def ndjson_response(lines: Iterable[Any]) -> httpx.Response:
    """A complete application/x-ndjson response."""
    body = "".join(json.dumps(line) + "\n" for line in lines)
    return httpx.Response(
        200, headers={"content-type": "application/x-ndjson"}, content=body.encode()
    )


def cut_off_response(body: bytes, content_type: str = "text/event-stream") -> httpx.Response:
    """A 200 whose body stops midway, as when the vendor's connection drops."""

    async def parts() -> AsyncIterator[bytes]:
        yield body
        raise httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body"
        )

    return httpx.Response(200, headers={"content-type": content_type}, content=parts())


async def collect(deltas: AsyncIterator[StreamDelta], received: list[str]) -> None:
    """Read a stream to its end (or its error), keeping the text that arrived."""
    async for delta in deltas:
        received.append(delta.text)
