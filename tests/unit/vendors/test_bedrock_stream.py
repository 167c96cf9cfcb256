"""ConverseStream: AWS event-stream frames built here from the documented framing, parsed
into deltas, tool calls, usage and reasoning; corrupt, cut and failing streams."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from dispatcher import FinishReason, InvalidRequest, Request, StreamBroken, Usage, VendorRateLimited
from dispatcher.models import ToolCallDelta
from dispatcher.vendors.base import StreamDelta, feed_all
from dispatcher.vendors.bedrock import ConverseStreamParser
from dispatcher.vendors.event_stream import EventStreamDecoder, encode_message
from tests.unit.vendors.conftest import Recorder, cut_off_response
from tests.unit.vendors.test_bedrock import ask, vendor

EVENT_STREAM = "application/vnd.amazon.eventstream"


def event(name: str, payload: dict[str, Any]) -> bytes:
    """One event message as Bedrock sends it (with the padding field `p`)."""
    headers = {":event-type": name, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, json.dumps({**payload, "p": "abcdefghij"}).encode())


def exception(name: str, message: str) -> bytes:
    headers = {
        ":exception-type": name,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, json.dumps({"message": message}).encode())


# The notes' section 7.5 stream, with reasoning before the text.
EVENTS = [
    event("messageStart", {"role": "assistant"}),
    event(
        "contentBlockDelta",
        {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Two "}}},
    ),
    event(
        "contentBlockDelta",
        {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "cities."}}},
    ),
    event(
        "contentBlockDelta",
        {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "sig=="}}},
    ),
    event("contentBlockStop", {"contentBlockIndex": 0}),
    event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Let me check."}}),
    event("contentBlockStop", {"contentBlockIndex": 1}),
    event(
        "contentBlockStart",
        {
            "contentBlockIndex": 2,
            "start": {"toolUse": {"toolUseId": "tooluse_kR2xQe", "name": "get_weather"}},
        },
    ),
    event(
        "contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": '{"city":'}}}
    ),
    event(
        "contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": '"Paris"}'}}}
    ),
    event("contentBlockStop", {"contentBlockIndex": 2}),
    event("messageStop", {"stopReason": "tool_use"}),
    event(
        "metadata",
        {
            "usage": {
                "inputTokens": 412,
                "outputTokens": 61,
                "totalTokens": 473,
                "cacheReadInputTokens": 0,
            },
            "metrics": {"latencyMs": 905},
        },
    ),
]
BODY = b"".join(EVENTS)


def stream_response(body: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": EVENT_STREAM}, content=body)


async def read(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request], body: bytes
) -> list[StreamDelta]:
    rec = recorder(stream_response(body))
    built = vendor(rec)
    deltas = [delta async for delta in built.stream(ask(make_request))]
    assert str(rec.last.url).endswith("/converse-stream")
    return deltas


def _check_final(final: StreamDelta) -> None:
    assert final.finish_reason is FinishReason.TOOL_CALLS
    assert final.vendor_finish_reason == "tool_use"
    assert final.usage == Usage(prompt_tokens=412, completion_tokens=61, total_tokens=473)
    assert [(c.id, c.name, c.arguments) for c in final.tool_calls] == [
        ("tooluse_kR2xQe", "get_weather", '{"city":"Paris"}')
    ]
    assert final.vendor_state == {
        "bedrock_reasoning": [
            {"reasoningContent": {"reasoningText": {"text": "Two cities.", "signature": "sig=="}}}
        ]
    }


async def test_a_stream_gives_text_tool_pieces_and_a_final_delta(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    deltas = await read(recorder, make_request, BODY)
    assert "".join(d.text for d in deltas) == "Let me check."
    pieces = [piece for d in deltas for piece in d.tool_call_deltas]
    # Numbered over calls only: block 2 is call 0; id and name on its first piece.
    assert pieces == [
        ToolCallDelta(index=0, id="tooluse_kR2xQe", name="get_weather", arguments=""),
        ToolCallDelta(index=0, arguments='{"city":'),
        ToolCallDelta(index=0, arguments='"Paris"}'),
    ]
    _check_final(deltas[-1])


def test_frames_cut_anywhere_parse_the_same() -> None:
    parser = ConverseStreamParser("bedrock")
    deltas = feed_all(parser, [BODY[i : i + 7] for i in range(0, len(BODY), 7)])
    assert "".join(d.text for d in deltas) == "Let me check."
    _check_final(deltas[-1])


def test_every_header_value_type_decodes() -> None:
    headers = b""
    for name, kind, value in [
        (b"t", 0, b""),
        (b"f", 1, b""),
        (b"b", 2, struct.pack(">b", -1)),
        (b"s", 3, struct.pack(">h", 300)),
        (b"i", 4, struct.pack(">i", 70000)),
        (b"l", 5, struct.pack(">q", 2**40)),
        (b"y", 6, struct.pack(">H", 2) + b"\x00\x01"),
        (b"w", 8, struct.pack(">q", 1_700_000_000_000)),
        (b"u", 9, bytes(range(16))),
    ]:
        headers += struct.pack(">B", len(name)) + name + struct.pack(">B", kind) + value
    total = 12 + len(headers) + 4
    prelude = struct.pack(">II", total, len(headers))
    frame = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers
    frame += struct.pack(">I", zlib.crc32(frame))
    (message,) = EventStreamDecoder().feed(frame)
    assert message.headers == {
        "t": True,
        "f": False,
        "b": -1,
        "s": 300,
        "i": 70000,
        "l": 2**40,
        "y": b"\x00\x01",
        "w": 1_700_000_000_000,
        "u": bytes(range(16)),
    }
    assert message.payload == b""


@pytest.mark.parametrize(
    ("where", "what"),
    [(20, "CRC32 does not match"), (9, "prelude CRC32 does not match")],
    ids=["message-crc", "prelude-crc"],
)
async def test_a_crc_mismatch_is_a_broken_stream(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    where: int,
    what: str,
) -> None:
    second = bytearray(EVENTS[5])  # the text delta
    second[where] ^= 0xFF
    body = EVENTS[0] + bytes(second) + b"".join(EVENTS[6:])
    with pytest.raises(StreamBroken, match=what) as caught:
        await read(recorder, make_request, body)
    assert caught.value.retryable is True
    assert caught.value.vendor == "bedrock"


async def test_a_body_that_ends_inside_a_frame_is_a_broken_stream(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    cut = BODY[: len(BODY) - len(EVENTS[-1]) - 10]  # inside messageStop
    with pytest.raises(StreamBroken, match="ended inside a message") as caught:
        await read(recorder, make_request, cut)
    assert caught.value.partial is True


async def test_a_dropped_connection_mid_frame_is_a_broken_stream(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(cut_off_response(BODY[:100], EVENT_STREAM))
    with pytest.raises(StreamBroken):
        [delta async for delta in vendor(rec).stream(ask(make_request))]


async def test_a_stream_without_message_stop_is_broken(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    with pytest.raises(StreamBroken, match="messageStop") as caught:
        await read(recorder, make_request, b"".join(EVENTS[:7]))
    assert caught.value.partial is True


async def test_a_server_exception_mid_stream_is_a_broken_stream_after_text(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    body = b"".join(EVENTS[:6]) + exception(
        "internalServerException", "The server encountered an internal error."
    )
    with pytest.raises(StreamBroken, match="internal error") as caught:
        await read(recorder, make_request, body)
    assert caught.value.partial is True
    assert caught.value.retryable is True


async def test_a_model_stream_error_is_a_broken_stream(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    body = EVENTS[0] + exception("modelStreamErrorException", "The model stream failed.")
    with pytest.raises(StreamBroken, match="model stream failed") as caught:
        await read(recorder, make_request, body)
    assert caught.value.partial is False


async def test_throttling_mid_stream_is_rate_limited(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    body = EVENTS[0] + exception("throttlingException", "Too many tokens, please wait.")
    with pytest.raises(VendorRateLimited, match="ThrottlingException"):
        await read(recorder, make_request, body)


async def test_a_validation_exception_mid_stream_is_final(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    body = EVENTS[0] + exception("validationException", "Input is too long for requested model.")
    with pytest.raises(InvalidRequest, match="too long") as caught:
        await read(recorder, make_request, body)
    assert caught.value.retryable is False
