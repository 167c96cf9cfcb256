"""Tools, JSON formats and images through a real worker against the stand-in (OpenAI format).

Over loopback, plain and streamed: a tool round trip (call -> tool result ->
final text), a strict json_schema reply parsed, an image request accepted. The
stand-in's answers follow `producer/cli/tools/standin/chat_rules.py`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher import FinishReason, Request
from producer import Client
from tests.chat_samples import ANSWER_FORMAT, PNG_URL, WEATHER_TOOL
from tests.integration.stack import Stack, running_stack, two_vendors

pytestmark = pytest.mark.integration

KEY = "sk-chat-test-0123456789abcdef"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with running_stack(tmp_path_factory.mktemp("chat")) as stack:
        yield _started(stack)


def _started(stack: Stack) -> Client:
    config = two_vendors()
    # Every OpenAI-family wire format: OpenAI (primary), OpenAI-compatible (backup), Azure.
    config["vendors"]["azure"] = {
        "type": "azure",
        "base_url": "{url}",
        "models": ["*"],
        "timeout_s": 5,
        "api_key": "${OPENAI_API_KEY}",
    }
    stack.configure(config, OPENAI_API_KEY=KEY)
    with stack.environment():
        client = Client.from_env()
    stack.start_worker(["llm.primary", "llm.backup", "llm.azure"], concurrency=4)
    return client


# Each OpenAI-family wire format, with the model it is asked for.
FAMILY = {"primary": "gpt-4o", "backup": "llama-3-70b", "azure": "my-gpt4o-deployment"}
FAMILY_STREAMS = [
    pytest.param(vendor, stream, id=f"{vendor}-{'streamed' if stream else 'plain'}")
    for vendor in FAMILY
    for stream in (False, True)
]


def ask(stream: bool, vendor: str = "primary", **fields: Any) -> dict[str, Any]:
    return {"model": FAMILY[vendor], "vendor": vendor, "stream": stream, **fields}


@pytest.mark.parametrize(("vendor", "stream"), FAMILY_STREAMS)
def test_a_tool_round_trip_calls_the_tool_then_answers_from_its_result(
    client: Client, vendor: str, stream: bool
) -> None:
    question = {"role": "user", "content": "Paris"}
    first = client.wait(
        client.submit(ask(stream, vendor, messages=[question], tools=[WEATHER_TOOL])),
        timeout_s=30,
    )
    assert first.vendor == vendor
    assert first.finish_reason is FinishReason.TOOL_CALLS
    (call,) = first.tool_calls
    assert call.name == "get_weather"
    assert call.id.startswith("call_")
    assert call.parsed_arguments() == {"city": "Paris"}

    result = {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c":18}'}
    turn = [question, first.to_message(), result]
    second = client.wait(
        client.submit(ask(stream, vendor, messages=turn, tools=[WEATHER_TOOL])), timeout_s=30
    )
    assert second.content == 'echo: {"temp_c":18}'
    assert second.tool_calls == []
    assert second.finish_reason is FinishReason.STOP


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_named_tool_choice_is_a_tool_turn_though_openai_says_stop(
    client: Client, stream: bool
) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    request = ask(
        stream,
        messages=[{"role": "user", "content": "Rome"}],
        tools=[{"type": "function", "function": {"name": "get_time"}}, WEATHER_TOOL],
        tool_choice=choice,
    )
    reply = client.wait(client.submit(request), timeout_s=30)
    assert reply.finish_reason is FinishReason.TOOL_CALLS
    assert reply.vendor_finish_reason == "stop"
    assert [(c.name, c.parsed_arguments()) for c in reply.tool_calls] == [
        ("get_weather", {"city": "Rome"})
    ]


@pytest.mark.parametrize(("vendor", "stream"), FAMILY_STREAMS)
def test_a_strict_json_schema_reply_is_parsed(client: Client, vendor: str, stream: bool) -> None:
    prompt = "The city of light"
    request = ask(
        stream,
        vendor,
        messages=[{"role": "user", "content": prompt}],
        response_format=ANSWER_FORMAT,
    )
    reply = client.wait(client.submit(request), timeout_s=30)
    assert reply.vendor == vendor
    assert reply.parsed == {"city": prompt, "words": 4}
    assert json.loads(reply.content) == reply.parsed


@pytest.mark.parametrize(
    ("vendor", "stream"), [p for p in FAMILY_STREAMS if p.values[0] != "backup"]
)
def test_an_image_request_is_accepted(client: Client, vendor: str, stream: bool) -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": PNG_URL}},
    ]
    request = Request.model_validate(
        ask(stream, vendor, messages=[{"role": "user", "content": parts}])
    )
    reply = client.wait(client.submit(request), timeout_s=30)
    assert reply.vendor == vendor
    assert reply.content == "echo: What is this? [1 image]"


def test_a_streamed_tool_call_goes_out_in_pieces_that_add_up_to_the_final_call(
    client: Client,
) -> None:
    question = {"role": "user", "content": "Paris"}
    events = list(client.send_streaming(ask(True, messages=[question], tools=[WEATHER_TOOL])))

    done = events[-1]
    assert done.type == "done"
    assert done.finish_reason is FinishReason.TOOL_CALLS
    pieces = [
        piece for event in events if event.type == "chunk" for piece in event.tool_calls or ()
    ]
    assert len(pieces) >= 2  # the id and name first, then the arguments, as the vendor sent them
    assert {piece.index for piece in pieces} == {0}
    assert (pieces[0].name, pieces[0].id) == ("get_weather", pieces[0].id)
    assert pieces[0].id is not None
    assert all(piece.id is None for piece in pieces[1:])
    arguments = "".join(piece.arguments for piece in pieces)
    assert json.loads(arguments) == {"city": "Paris"}
    record = client.get(done.job_id)
    assert record.response is not None
    (call,) = record.response.tool_calls
    assert (call.id, call.name, call.arguments) == (pieces[0].id, "get_weather", arguments)
