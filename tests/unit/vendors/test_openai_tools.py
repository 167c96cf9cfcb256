"""OpenAI-family wire formats for tools, images, response formats and seed (§1 of the tools page).

Bodies go out exactly as the documentation's examples show them; replies and
streams with tool calls come back as our `ToolCall`s; the runner parses JSON
replies and checks strict schemas for every vendor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from httpx_sse import ServerSentEvent
from pydantic import SecretStr

from dispatcher import (
    FinishReason,
    InvalidVendorOutput,
    Request,
    Response,
    ToolCall,
    VendorConfig,
)
from dispatcher.runner.reply_checks import checked_reply
from dispatcher.runner.vendor_call import call_vendor
from dispatcher.vendors.azure import AzureOpenAIVendor
from dispatcher.vendors.base import feed_all
from dispatcher.vendors.openai import ChatStreamParser, OpenAIVendor
from dispatcher.vendors.openai_compatible import OpenAICompatibleVendor
from producer.checks import validated
from tests.chat_samples import ANSWER_SCHEMA, CALL, PNG_URL, TOOL_TURN, WEATHER_TOOL
from tests.unit.vendors.conftest import Recorder, json_response, sse_response

KEY = "sk-test-openai-0123456789abcdef"

# §1.2: a reply with two parallel calls.
TOOL_REPLY: dict[str, Any] = {
    "id": "chatcmpl-7Qd",
    "object": "chat.completion",
    "created": 1762000000,
    "model": "gpt-x",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_Zk31",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_Yb07",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                    },
                ],
            },
        }
    ],
    "usage": {"prompt_tokens": 88, "completion_tokens": 41, "total_tokens": 129},
}
# §1.4: the same two calls streamed in fragments.
TOOL_STREAM = [
    'data: {"id":"chatcmpl-7Qd","object":"chat.completion.chunk","created":1762000000,"model":"gpt-x","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_Zk31","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}',
    'data: {"id":"chatcmpl-7Qd","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\":"}}]},"finish_reason":null}]}',
    'data: {"id":"chatcmpl-7Qd","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\\"Paris\\"}"}}]},"finish_reason":null}]}',
    'data: {"id":"chatcmpl-7Qd","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_Yb07","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}',
    'data: {"id":"chatcmpl-7Qd","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\\"city\\":\\"Rome\\"}"}}]},"finish_reason":null}]}',
    'data: {"id":"chatcmpl-7Qd","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}',
    'data: {"id":"chatcmpl-7Qd","choices":[],"usage":{"prompt_tokens":88,"completion_tokens":41,"total_tokens":129}}',
    "data: [DONE]",
]
PARIS_AND_ROME = [
    ToolCall(id="call_Zk31", function={"name": "get_weather", "arguments": '{"city":"Paris"}'}),
    ToolCall(id="call_Yb07", function={"name": "get_weather", "arguments": '{"city":"Rome"}'}),
]


def reply_with(content: str | None, finish: str = "stop", **message: Any) -> dict[str, Any]:
    choice = {
        "index": 0,
        "finish_reason": finish,
        "message": {"role": "assistant", "content": content, **message},
    }
    return {"id": "c", "model": "gpt-x", "choices": [choice], "usage": {"prompt_tokens": 1}}


def openai(recorder: Recorder) -> OpenAIVendor:
    config = VendorConfig(type="openai", api_key=SecretStr(KEY))
    return OpenAIVendor("openai", config, recorder.client())


def events(lines: list[str]) -> list[ServerSentEvent]:
    return [ServerSentEvent(data=line.removeprefix("data: ")) for line in lines]


async def test_the_documented_request_goes_out_as_is(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(json_response(200, TOOL_REPLY))
    await openai(rec).complete(validated(TOOL_TURN))
    assert rec.last_json() == TOOL_TURN


async def test_images_go_out_as_parts_with_their_detail(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    parts = [
        {"type": "text", "text": "Compare these two."},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": PNG_URL}},
    ]
    rec = recorder(json_response(200, reply_with("Two cats.")))
    await openai(rec).complete(make_request(messages=[{"role": "user", "content": parts}]))
    assert rec.last_json()["messages"] == [{"role": "user", "content": parts}]


async def test_named_tool_choice_no_parallel_calls_json_object_and_seed(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, reply_with("{}")))
    choice = {"type": "function", "function": {"name": "get_weather"}}
    request = make_request(
        messages=[{"role": "user", "content": "Answer in json."}],
        tools=[WEATHER_TOOL],
        tool_choice=choice,
        parallel_tool_calls=False,
        response_format={"type": "json_object"},
        seed=42,
    )
    await openai(rec).complete(request)
    sent = rec.last_json()
    assert sent["tool_choice"] == choice
    assert sent["parallel_tool_calls"] is False
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["seed"] == 42
    assert sent["tools"] == [WEATHER_TOOL]


async def test_a_tool_without_description_or_parameters_leaves_them_out(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, reply_with("ok")))
    await openai(rec).complete(
        make_request(tools=[{"type": "function", "function": {"name": "now"}}])
    )
    assert rec.last_json()["tools"] == [{"type": "function", "function": {"name": "now"}}]


@pytest.mark.parametrize("cls", [AzureOpenAIVendor, OpenAICompatibleVendor])
async def test_azure_and_compatible_send_the_same_body(
    recorder: Callable[..., Recorder], cls: type[OpenAIVendor]
) -> None:
    rec = recorder(json_response(200, TOOL_REPLY))
    kind = "azure" if cls is AzureOpenAIVendor else "openai_compatible"
    config = VendorConfig(
        type=kind, api_key=SecretStr(KEY), base_url="https://example.openai.azure.com"
    )
    await cls("v", config, rec.client()).complete(validated(TOOL_TURN))
    sent = rec.last_json()
    sent.pop("model", None)  # Azure names the deployment in the URL instead
    assert sent == {key: value for key, value in TOOL_TURN.items() if key != "model"}


async def test_a_reply_with_tool_calls_parses_to_calls_and_the_tool_calls_reason(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    response = await openai(recorder(json_response(200, TOOL_REPLY))).complete(make_request())
    assert response.tool_calls == PARIS_AND_ROME
    assert response.content == ""
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert [call.parsed_arguments() for call in response.tool_calls] == [
        {"city": "Paris"},
        {"city": "Rome"},
    ]


async def test_a_named_tool_choice_ending_with_stop_is_still_a_tool_turn(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    body = reply_with("Checking.", "stop", tool_calls=[CALL])
    response = await openai(recorder(json_response(200, body))).complete(make_request())
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.vendor_finish_reason == "stop"
    assert response.content == "Checking."
    assert response.tool_calls == [ToolCall.model_validate(CALL)]


async def test_a_custom_tool_call_we_never_declared_is_invalid_output(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    custom = {"id": "call_1", "type": "custom", "custom": {"name": "sql", "input": "SELECT 1"}}
    rec = recorder(json_response(200, reply_with(None, "tool_calls", tool_calls=[custom])))
    with pytest.raises(InvalidVendorOutput, match="type 'custom'") as caught:
        await openai(rec).complete(make_request())
    assert "SELECT 1" in caught.value.raw_text


def test_streamed_tool_call_fragments_are_assembled_by_index() -> None:
    *deltas, final = feed_all(ChatStreamParser("openai"), events(TOOL_STREAM))
    assert deltas == []  # no text
    assert list(final.tool_calls) == PARIS_AND_ROME
    assert final.finish_reason is FinishReason.TOOL_CALLS
    assert final.usage is not None
    assert final.usage.total_tokens == 129


def test_several_fragments_in_one_chunk_and_text_beside_calls_are_kept() -> None:
    chunk = {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "function": {"name": "f", "arguments": '{"a"'},
                        },
                        {"index": 0, "function": {"arguments": ": 1}"}},
                    ],
                },
                "finish_reason": "stop",
            }
        ]
    }
    *deltas, final = feed_all(
        ChatStreamParser("openai"),
        [ServerSentEvent(data=json.dumps(chunk)), ServerSentEvent(data="[DONE]")],
    )
    assert [d.text for d in deltas] == ["Checking."]
    assert list(final.tool_calls) == [
        ToolCall(id="call_1", function={"name": "f", "arguments": '{"a": 1}'})
    ]
    assert final.finish_reason is FinishReason.TOOL_CALLS


async def test_a_streamed_call_reaches_the_final_response(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    vendor = openai(recorder(sse_response(TOOL_STREAM)))
    response = await call_vendor(vendor, make_request(stream=True), "gpt-x")
    assert response.tool_calls == PARIS_AND_ROME
    assert response.finish_reason is FinishReason.TOOL_CALLS


def test_the_stream_body_keeps_tools_and_asks_for_usage(
    make_request: Callable[..., Request],
) -> None:
    vendor = OpenAIVendor("openai", VendorConfig(type="openai", api_key=SecretStr(KEY)))
    request = make_request(tools=[WEATHER_TOOL], stream=True)
    body = json.loads(vendor.build_request(request, "gpt-4o", stream=True).content)
    assert body["tools"] == [WEATHER_TOOL]
    assert body["stream_options"] == {"include_usage": True}


# --- the runner's checks: every vendor gets them -------------------------------------------

JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True},
}


def reply(content: str, **fields: Any) -> Response:
    return Response(content=content, model="gpt-x", vendor="somevendor", **fields)


def test_a_json_schema_reply_is_parsed_and_checked(make_request: Callable[..., Request]) -> None:
    request = make_request(response_format=JSON_SCHEMA_FORMAT)
    checked = checked_reply(request, reply('{"city": "Paris", "temp_c": 18}'))
    assert checked.parsed == {"city": "Paris", "temp_c": 18}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"city": "Paris"}', "'temp_c' is a required property"),
        ('{"city": 5, "temp_c": 1}', "at city: 5 is not of type 'string'"),
        ('{"city": "P", "temp_c": 1, "extra": 1}', "Additional properties are not allowed"),
        ("Sure! Here it is: {", "is not valid JSON"),
    ],
)
def test_a_strict_reply_that_does_not_parse_or_match_keeps_its_raw_text(
    make_request: Callable[..., Request], text: str, problem: str
) -> None:
    request = make_request(response_format=JSON_SCHEMA_FORMAT)
    with pytest.raises(InvalidVendorOutput, match=problem) as caught:
        checked_reply(request, reply(text))
    error = caught.value
    assert (error.raw_text, error.vendor, error.kind, error.retryable) == (
        text,
        "somevendor",
        "invalid_output",
        False,
    )


def test_a_non_strict_schema_is_parsed_but_not_checked(
    make_request: Callable[..., Request],
) -> None:
    loose = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA}}
    assert checked_reply(make_request(response_format=loose), reply('{"x": 1}')).parsed == {"x": 1}


def test_json_object_is_parsed_and_text_is_left_alone(make_request: Callable[..., Request]) -> None:
    json_mode = make_request(response_format={"type": "json_object"})
    assert checked_reply(json_mode, reply("[1, 2]")).parsed == [1, 2]
    with pytest.raises(InvalidVendorOutput):
        checked_reply(json_mode, reply("not json"))
    text_mode = make_request(response_format={"type": "text"})
    assert checked_reply(text_mode, reply("not json")).parsed is None


def test_a_truncated_json_reply_says_so(make_request: Callable[..., Request]) -> None:
    request = make_request(response_format={"type": "json_object"})
    with pytest.raises(InvalidVendorOutput, match="cut at max_tokens"):
        checked_reply(request, reply('{"city": "Pa', finish_reason=FinishReason.LENGTH))


def test_a_refusal_or_a_tool_turn_has_no_json_to_parse(
    make_request: Callable[..., Request],
) -> None:
    request = make_request(response_format={"type": "json_object"}, tools=[WEATHER_TOOL])
    refused = reply("I can't help with that.", finish_reason=FinishReason.CONTENT_FILTER)
    assert checked_reply(request, refused).parsed is None
    tool_turn = reply("", tool_calls=[CALL], finish_reason=FinishReason.TOOL_CALLS)
    assert checked_reply(request, tool_turn).parsed is None


def test_strict_tool_arguments_are_checked_and_undeclared_tools_refused(
    make_request: Callable[..., Request],
) -> None:
    request = make_request(tools=[WEATHER_TOOL])
    good = reply("", tool_calls=[CALL])
    assert checked_reply(request, good) == good
    bad_args = {**CALL, "function": {"name": "get_weather", "arguments": '{"town": "Paris"}'}}
    with pytest.raises(InvalidVendorOutput, match="'city' is a required property"):
        checked_reply(request, reply("", tool_calls=[bad_args]))
    unknown = {**CALL, "function": {"name": "get_time", "arguments": "{}"}}
    with pytest.raises(InvalidVendorOutput, match="'get_time', a tool the request did not declare"):
        checked_reply(request, reply("", tool_calls=[unknown]))


async def test_the_runner_parses_what_the_vendor_returned(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    vendor = openai(recorder(json_response(200, reply_with('{"city": "Paris", "temp_c": null}'))))
    request = make_request(response_format=JSON_SCHEMA_FORMAT)
    response = await call_vendor(vendor, request, "gpt-x", deadline=None)
    assert response.parsed == {"city": "Paris", "temp_c": None}
