"""Tools, JSON formats and images through a real worker against the stand-in (Gemini format).

Over loopback, plain and streamed: a tool round trip (call -> tool result ->
final text) whose thought signature travels through the job record and comes
back on the next turn (the stand-in refuses the turn without it, as Gemini 3
does), a strict json_schema reply parsed, an image request accepted. The
stand-in's answers follow `producer/cli/tools/standin/chat_rules.py`; its
Gemini side is `producer/cli/tools/standin/gemini.py`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher import FinishReason, InvalidRequest, JobStatus, Message, Request
from producer import Client
from producer.cli.tools.standin.gemini import thought_signature
from tests.chat_samples import ANSWER_FORMAT, PNG_URL, WEATHER_TOOL
from tests.integration.stack import running_stack

pytestmark = pytest.mark.integration

KEY = "AIzaSy-chat-test-0123456789abcdef"
MODEL = "gemini-3-pro-preview"


def gemini_only() -> dict[str, Any]:
    """One Gemini vendor on the stand-in; no retries, so a refusal fails at once."""
    vendor = {"type": "gemini", "base_url": "{url}", "models": ["gemini-*"], "timeout_s": 5}
    return {
        "vendors": {"gemini": {**vendor, "api_key": "${GOOGLE_API_KEY}"}},
        "default_vendor": "gemini",
        "retry_policy": {"max_retries": 0},
    }


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with running_stack(tmp_path_factory.mktemp("chat-gemini")) as stack:
        stack.configure(gemini_only(), GOOGLE_API_KEY=KEY)
        with stack.environment():
            client = Client.from_env()
        stack.start_worker(["llm.gemini"], concurrency=4)
        yield client


def ask(stream: bool, **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "vendor": "gemini", "stream": stream, **fields}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_tool_round_trip_hands_the_thought_signature_back(client: Client, stream: bool) -> None:
    question = {"role": "user", "content": "Paris"}
    first = client.wait(
        client.submit(ask(stream, messages=[question], tools=[WEATHER_TOOL])), timeout_s=30
    )
    assert first.vendor == "gemini"
    assert first.finish_reason is FinishReason.TOOL_CALLS
    (call,) = first.tool_calls
    assert call.name == "get_weather"
    assert call.id.startswith("call_")
    assert call.parsed_arguments() == {"city": "Paris"}
    signature = thought_signature("get_weather", {"city": "Paris"})
    assert first.vendor_state == {"gemini": {"signatures": {call.id: signature}}}

    result = {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c":18}'}
    turn = [question, first.to_message(), result]
    second = client.wait(
        client.submit(ask(stream, messages=turn, tools=[WEATHER_TOOL])), timeout_s=30
    )
    assert second.content == 'echo: {"temp_c":18}'
    assert second.tool_calls == []
    assert second.finish_reason is FinishReason.STOP


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_turn_that_drops_the_signature_fails_as_an_invalid_request(
    client: Client, stream: bool
) -> None:
    question = {"role": "user", "content": "Rome"}
    first = client.wait(
        client.submit(ask(stream, messages=[question], tools=[WEATHER_TOOL])), timeout_s=30
    )
    (call,) = first.tool_calls
    stripped = Message(role="assistant", tool_calls=[call])
    result = {"role": "tool", "tool_call_id": call.id, "content": "18"}
    job_id = client.submit(ask(stream, messages=[question, stripped, result], tools=[WEATHER_TOOL]))
    with pytest.raises(InvalidRequest, match="thought_signature"):
        client.wait(job_id, timeout_s=30)
    assert client.get(job_id).status is JobStatus.FAILED


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_strict_json_schema_reply_is_parsed(client: Client, stream: bool) -> None:
    prompt = "The city of light"
    request = ask(
        stream, messages=[{"role": "user", "content": prompt}], response_format=ANSWER_FORMAT
    )
    reply = client.wait(client.submit(request), timeout_s=30)
    assert reply.parsed == {"city": prompt, "words": 4}
    assert json.loads(reply.content) == reply.parsed


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_image_request_is_accepted(client: Client, stream: bool) -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": PNG_URL}},
    ]
    request = Request.model_validate(ask(stream, messages=[{"role": "user", "content": parts}]))
    reply = client.wait(client.submit(request), timeout_s=30)
    assert reply.content == "echo: What is this? [1 image]"


def test_a_streamed_call_goes_out_whole_as_one_piece_matching_the_final_call(
    client: Client,
) -> None:
    question = {"role": "user", "content": "Oslo"}
    events = list(client.send_streaming(ask(True, messages=[question], tools=[WEATHER_TOOL])))

    done = events[-1]
    assert done.type == "done"
    assert done.finish_reason is FinishReason.TOOL_CALLS
    (piece,) = [p for event in events if event.type == "chunk" for p in event.tool_calls or ()]
    assert (piece.index, piece.name) == (0, "get_weather")
    assert json.loads(piece.arguments) == {"city": "Oslo"}
    record = client.get(done.job_id)
    assert record.response is not None
    (call,) = record.response.tool_calls
    assert (call.id, call.arguments) == (piece.id, piece.arguments)
    assert record.response.vendor_state == {
        "gemini": {"signatures": {call.id: thought_signature("get_weather", {"city": "Oslo"})}}
    }
