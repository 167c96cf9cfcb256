"""The stand-in's Anthropic Messages answers to tools, images, formats and thinking (§3 of the
tools page): exact reply shapes, the streamed event sequence, and the refusals it copies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from dispatcher import Request
from dispatcher.vendors.anthropic import build_body
from producer.cli.tools.standin.anthropic import AnthropicFormat
from producer.cli.tools.standin.replies import Call, Refused, reply_to
from tests.chat_samples import PNG_URL, TOOL_TURN

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
USE = {"type": "tool_use", "id": "toolu_01A9", "name": "get_weather", "input": {"city": "Paris"}}


def parse(**body: Any) -> Call:
    request = make_mocked_request(
        "POST", "/v1/messages", headers={"anthropic-version": "2023-06-01"}
    )
    return AnthropicFormat().parse(request, {"model": "claude-x", "max_tokens": 64, **body})


def refusal(**body: Any) -> str:
    with pytest.raises(Refused) as caught:
        parse(**body)
    data = json.loads(caught.value.response.text or "{}")
    assert caught.value.response.status == 400
    assert data["error"]["type"] == "invalid_request_error"
    return str(data["error"]["message"])


def stream_events(call: Call) -> list[tuple[str, dict[str, Any]]]:
    stream = AnthropicFormat().stream(call, reply_to(call), "r1")
    raw = (stream.opening + b"".join(stream.events) + stream.closing).decode()
    events = []
    for chunk in raw.strip().split("\n\n"):
        name, data = chunk.split("\n", 1)
        events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


def test_a_call_is_a_tool_use_block_with_an_object_input_and_stop_reason_tool_use() -> None:
    call = parse(messages=[{"role": "user", "content": "Paris"}], tools=[WEATHER])
    body = AnthropicFormat().whole(call, reply_to(call), "r1")
    (block,) = body["content"]
    assert block["type"] == "tool_use"
    assert block["id"].startswith("toolu_")
    assert (block["name"], block["input"]) == ("get_weather", {"city": "Paris"})
    assert body["stop_reason"] == "tool_use"


def test_a_streamed_call_opens_with_an_empty_input_then_sends_input_json_deltas() -> None:
    call = parse(messages=[{"role": "user", "content": "Paris"}], tools=[WEATHER], stream=True)
    events = stream_events(call)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = events[1][1]["content_block"]
    assert (start["type"], start["name"], start["input"]) == ("tool_use", "get_weather", {})
    fragments = [
        data["delta"]["partial_json"] for name, data in events if name == "content_block_delta"
    ]
    assert fragments[0] == ""
    assert json.loads("".join(fragments)) == {"city": "Paris"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_tool_results_answer_the_calls_of_the_message_before() -> None:
    turn = [
        {"role": "user", "content": "Paris"},
        {"role": "assistant", "content": [USE]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A9", "content": "18"},
            {"type": "text", "text": "Briefly."}]},
    ]  # fmt: skip
    call = parse(messages=turn, tools=[WEATHER])
    assert reply_to(call).text == "echo: 18"


@pytest.mark.parametrize(
    ("last", "message"),
    [
        (
            [{"type": "text", "text": "Briefly."},
             {"type": "tool_result", "tool_use_id": "toolu_01A9", "content": "18"}],
            "`tool_result` blocks must come first",
        ),
        ([{"type": "text", "text": "No result."}], "ids were found without `tool_result` blocks"),
        (
            [{"type": "tool_result", "tool_use_id": "toolu_01A9", "content": "18"},
             {"type": "tool_result", "tool_use_id": "toolu_X", "content": "1"}],
            "unexpected `tool_use_id` found in `tool_result` blocks: toolu_X",
        ),
    ],
)  # fmt: skip
def test_misplaced_missing_or_unknown_results_are_refused(
    last: list[dict[str, Any]], message: str
) -> None:
    turn = [
        {"role": "user", "content": "Paris"},
        {"role": "assistant", "content": [USE]},
        {"role": "user", "content": last},
    ]
    assert message in refusal(messages=turn, tools=[WEATHER])


def test_a_call_input_that_is_a_string_is_refused() -> None:
    use = {**USE, "input": '{"city": "Paris"}'}
    turn = [{"role": "user", "content": "Paris"}, {"role": "assistant", "content": [use]}]
    assert "Input should be a valid dictionary" in refusal(messages=turn, tools=[WEATHER])


def test_an_openai_shaped_tool_is_refused() -> None:
    tool = {"type": "function", "function": {"name": "get_weather"}}
    assert "tools.0" in refusal(messages=[{"role": "user", "content": "x"}], tools=[tool])


def test_images_are_base64_with_a_media_type_or_url_sources() -> None:
    data = PNG_URL.partition(",")[2]
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
    ]
    call = parse(messages=[{"role": "user", "content": parts}])
    assert reply_to(call).text == "echo: What is this? [2 images]"
    bad = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_URL}}
    ]
    assert "not valid base64" in refusal(messages=[{"role": "user", "content": bad}])


def test_output_config_format_gets_its_json_as_the_text_block() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    fmt = {"format": {"type": "json_schema", "schema": schema}}
    call = parse(messages=[{"role": "user", "content": "Paris"}], output_config=fmt)
    body = AnthropicFormat().whole(call, reply_to(call), "r1")
    assert body["content"] == [{"type": "text", "text": '{"city":"Paris"}'}]
    both = refusal(
        messages=[{"role": "user", "content": "Paris"}], output_config=fmt, output_format={}
    )
    assert "may not both be set" in both


def test_with_thinking_on_a_reply_opens_with_a_signed_block_that_must_come_back() -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    question = {"role": "user", "content": "Paris"}
    call = parse(messages=[question], tools=[WEATHER], thinking=thinking)
    content = AnthropicFormat().whole(call, reply_to(call), "r1")["content"]
    assert [block["type"] for block in content] == ["thinking", "tool_use"]
    result = {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": content[1]["id"], "content": "18"}]}  # fmt: skip
    again = parse(
        messages=[question, {"role": "assistant", "content": content}, result],
        tools=[WEATHER],
        thinking=thinking,
    )
    assert reply_to(again).text == "echo: 18"
    bare = [question, {"role": "assistant", "content": content[1:]}, result]
    assert "Expected `thinking` or `redacted_thinking`, but found `tool_use`" in refusal(
        messages=bare, tools=[WEATHER], thinking=thinking
    )
    forged = [{**content[0], "thinking": "changed"}, content[1]]
    assert "Invalid `signature`" in refusal(
        messages=[question, {"role": "assistant", "content": forged}, result],
        tools=[WEATHER],
        thinking=thinking,
    )
    forced = {"type": "any"}
    assert "Thinking may not be enabled" in refusal(
        messages=[question], tools=[WEATHER], thinking=thinking, tool_choice=forced
    )


def test_streamed_thinking_comes_as_thinking_and_signature_deltas_before_the_text() -> None:
    call = parse(
        messages=[{"role": "user", "content": "Hi"}],
        thinking={"type": "enabled", "budget_tokens": 1024},
        stream=True,
    )
    deltas = [
        data["delta"]["type"] for name, data in stream_events(call) if name == "content_block_delta"
    ]
    assert deltas == ["thinking_delta", "signature_delta", "text_delta", "text_delta"]


def test_the_stand_in_takes_what_our_client_sends_for_the_section_0_1_request() -> None:
    request = Request.model_validate({**TOOL_TURN, "seed": None})
    call = parse(**build_body(request, "claude-x", stream=False))
    assert call.ask.json_schema is not None
    assert call.ask.last_role == "tool"
    # A json_schema answers with JSON, whatever the last message.
    prompt = call.ask.prompt
    assert json.loads(reply_to(call).text) == {"city": prompt, "temp_c": len(prompt.split())}
