"""Streamed tool calls reach the job's stream as pieces, in order, and add up to the final calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import fakeredis
import pytest

from dispatcher import JobCancelled, Request, Route, ToolCall, ToolCallDelta
from dispatcher.config.schema import VendorConfig
from dispatcher.models import FinishReason, Response, StreamEventType
from dispatcher.runner.vendor_call import call_vendor
from dispatcher.state.store import JobStore
from dispatcher.state.store_async import AsyncStreamWriter
from dispatcher.vendors.base import StreamDelta, Vendor
from dispatcher.vendors.tool_calls import ToolCallAssembler
from tests.unit.vendors.conftest import Recorder, sse_response
from tests.unit.vendors.test_openai_tools import PARIS_AND_ROME, TOOL_STREAM, openai

Heard = list[tuple[str, Any]]


def assembled(pieces: Sequence[ToolCallDelta]) -> list[ToolCall]:
    """The calls the pieces spell, as a stream consumer would join them."""
    calls: dict[int, dict[str, Any]] = {}
    for piece in pieces:
        call = calls.setdefault(piece.index, {"id": None, "name": None, "arguments": ""})
        call["id"] = piece.id or call["id"]
        call["name"] = piece.name or call["name"]
        call["arguments"] += piece.arguments
    return [
        ToolCall(id=c["id"], function={"name": c["name"], "arguments": c["arguments"]})
        for _, c in sorted(calls.items())
    ]


def listeners(heard: Heard) -> dict[str, Any]:
    async def on_text(text: str, _at: float) -> bool:
        heard.append(("text", text))
        return True

    async def on_tool_calls(pieces: Sequence[ToolCallDelta], _at: float) -> bool:
        heard.extend(("piece", piece) for piece in pieces)
        return True

    return {"on_text": on_text, "on_tool_calls": on_tool_calls}


def test_the_assembler_hands_out_each_piece_once_numbered_by_when_its_call_started() -> None:
    assembler = ToolCallAssembler("v")
    assembler.add("b", call_id="call_1", name="f", arguments="")
    assembler.add("b", arguments='{"x":')
    first = assembler.take_pieces()
    assembler.add("a", call_id="call_2", name="g")
    assembler.add("b", arguments="1}")
    second = assembler.take_pieces()

    assert first == (
        ToolCallDelta(index=0, id="call_1", name="f"),
        ToolCallDelta(index=0, arguments='{"x":'),
    )
    assert second == (
        ToolCallDelta(index=1, id="call_2", name="g"),
        ToolCallDelta(index=0, arguments="1}"),
    )
    assert assembler.take_pieces() == ()
    assert [c.id for c in assembler.calls()] == ["call_1", "call_2"]


async def test_an_openai_stream_is_heard_piece_by_piece_and_the_pieces_make_the_calls(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    heard: Heard = []
    vendor = openai(recorder(sse_response(TOOL_STREAM)))

    response = await call_vendor(vendor, make_request(stream=True), "gpt-x", **listeners(heard))

    pieces = [what for kind, what in heard if kind == "piece"]
    assert len(pieces) == 5  # as the vendor sent them, not joined
    assert assembled(pieces) == PARIS_AND_ROME == response.tool_calls
    assert response.finish_reason is FinishReason.TOOL_CALLS


class WholeCalls(Vendor):
    """A vendor that streams some text, then sends its calls whole in the final delta."""

    def __init__(self, calls: list[ToolCall]) -> None:
        super().__init__("whole", VendorConfig(type="mock"))
        self.calls = calls

    async def complete(self, request: Request, model: str | None = None) -> Response:
        raise NotImplementedError

    async def stream(
        self, request: Request, model: str | None = None
    ) -> AsyncIterator[StreamDelta]:
        yield StreamDelta(text="Let me look.")
        yield StreamDelta(finish_reason=FinishReason.TOOL_CALLS, tool_calls=tuple(self.calls))

    async def health_check(self) -> Any:
        raise NotImplementedError


async def test_calls_sent_whole_are_heard_as_one_piece_each_before_the_reply_ends(
    make_request: Callable[..., Request],
) -> None:
    heard: Heard = []
    vendor = WholeCalls(PARIS_AND_ROME)

    response = await call_vendor(vendor, make_request(stream=True), "m", **listeners(heard))

    assert heard[0] == ("text", "Let me look.")
    pieces = [what for kind, what in heard if kind == "piece"]
    assert pieces == [
        ToolCallDelta(index=0, id="call_Zk31", name="get_weather", arguments='{"city":"Paris"}'),
        ToolCallDelta(index=1, id="call_Yb07", name="get_weather", arguments='{"city":"Rome"}'),
    ]
    assert response.tool_calls == PARIS_AND_ROME


async def test_a_listener_that_no_longer_wants_the_pieces_drops_the_stream(
    make_request: Callable[..., Request],
) -> None:
    async def refuse(_pieces: Sequence[ToolCallDelta], _at: float) -> bool:
        return False

    with pytest.raises(JobCancelled):
        await call_vendor(
            WholeCalls(PARIS_AND_ROME), make_request(stream=True), "m", on_tool_calls=refuse
        )


async def test_the_writer_publishes_pieces_on_chunk_events_joined_with_their_text(
    make_request: Callable[..., Request],
) -> None:
    server = fakeredis.FakeServer()
    store = JobStore(fakeredis.FakeRedis(server=server), "pieces")
    writer = AsyncStreamWriter(fakeredis.FakeAsyncRedis(server=server), "pieces")
    job_id = store.new_job_id()
    store.create(job_id, make_request(stream=True), Route(vendor="v", model="m", queue="llm.v"))
    assert store.start(job_id, 0, "v") == "ok"
    pieces = [ToolCallDelta(index=0, id="call_1", name="f"), ToolCallDelta(index=0, arguments="{}")]

    assert writer.offer(job_id, 0, "Hm.", 1.0)
    assert writer.offer(job_id, 0, "", 1.1, pieces[:1])  # joined: the first write is pending
    assert writer.offer(job_id, 0, "", 1.2, pieces[1:])
    await writer.drain(job_id, 0)

    events = store.stream_events(job_id)
    assert [e.type for e in events] == [StreamEventType.CHUNK]
    assert events[0].delta == "Hm."
    assert events[0].tool_calls == pieces
    raw = json.loads(store.redis.xrange(store.keys.stream(job_id))[0][1][b"e"])
    assert raw["tool_calls"][1] == {"index": 0, "arguments": "{}"}


async def test_a_text_only_chunk_carries_no_tool_calls_field(
    make_request: Callable[..., Request],
) -> None:
    server = fakeredis.FakeServer()
    store = JobStore(fakeredis.FakeRedis(server=server), "pieces")
    writer = AsyncStreamWriter(fakeredis.FakeAsyncRedis(server=server), "pieces")
    job_id = store.new_job_id()
    store.create(job_id, make_request(stream=True), Route(vendor="v", model="m", queue="llm.v"))
    assert store.start(job_id, 0, "v") == "ok"

    assert await writer.append_chunk(job_id, 0, "plain", 1.0) == 1

    raw = json.loads(store.redis.xrange(store.keys.stream(job_id))[0][1][b"e"])
    assert "tool_calls" not in raw
    assert store.stream_events(job_id)[0].tool_calls is None
