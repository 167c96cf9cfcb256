"""Cohere v2 Chat for tools, tool plans, images, formats and seed (§6 of the tools page).

Bodies go out as the documentation's examples show them (declarations,
`tool_choice` in upper case, `strict_tools`, the assistant turn with its
`tool_plan` and `tool_calls`, tool results by `tool_call_id`, `image_url`
parts, `response_format` json_object with `json_schema`, `seed`); what has
no form on the wire is refused naming the field; replies and streams with
calls and a tool plan come back as our `ToolCall`s and `vendor_state`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from httpx_sse import ServerSentEvent
from pydantic import SecretStr

from dispatcher import FinishReason, InvalidRequest, Request, ToolCall, Usage, VendorConfig
from dispatcher.vendors.base import feed_all
from dispatcher.vendors.cohere import ChatStreamParser, CohereVendor
from producer.checks import validated
from tests.chat_samples import ANSWER_SCHEMA, PNG_URL, WEATHER_SCHEMA, WEATHER_TOOL
from tests.unit.vendors.conftest import Recorder, json_response, sse_response

KEY = "Xk3vQ9pL2mN8rT5wY7zA1bC4dE6fG0hJ2kL4mN6p"
PLAN = "I will look up the weather for both cities."
# §6.2: a reply with a tool plan and two calls.
TOOL_REPLY: dict[str, Any] = {
    "id": "5b0d-1",
    "finish_reason": "TOOL_CALL",
    "message": {
        "role": "assistant",
        "tool_plan": PLAN,
        "tool_calls": [
            {
                "id": "get_weather_kq8v2r1m",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {
                "id": "get_weather_w3j7x0bn",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
            },
        ],
    },
    "usage": {
        "billed_units": {"input_tokens": 61, "output_tokens": 44},
        "tokens": {"input_tokens": 1180, "output_tokens": 102},
        "cached_tokens": 0,
    },
}
PARIS_AND_ROME = [
    ToolCall(
        id="get_weather_kq8v2r1m",
        function={"name": "get_weather", "arguments": '{"city":"Paris"}'},
    ),
    ToolCall(
        id="get_weather_w3j7x0bn",
        function={"name": "get_weather", "arguments": '{"city":"Rome"}'},
    ),
]
# §6.4: the plan and the first call streamed; a second call repeats with index 1.
TOOL_STREAM = [
    'event: message-start\ndata: {"id":"5b0d-1","type":"message-start","delta":{"message":{"role":"assistant","content":[],"tool_plan":"","tool_calls":[],"citations":[]}}}',
    'event: tool-plan-delta\ndata: {"type":"tool-plan-delta","delta":{"message":{"tool_plan":"I will look up"}}}',
    'event: tool-plan-delta\ndata: {"type":"tool-plan-delta","delta":{"message":{"tool_plan":" the weather for both cities."}}}',
    'event: tool-call-start\ndata: {"type":"tool-call-start","index":0,"delta":{"message":{"tool_calls":{"id":"get_weather_kq8v2r1m","type":"function","function":{"name":"get_weather","arguments":""}}}}}',
    'event: tool-call-delta\ndata: {"type":"tool-call-delta","index":0,"delta":{"message":{"tool_calls":{"function":{"arguments":"{\\"city\\":"}}}}}',
    'event: tool-call-delta\ndata: {"type":"tool-call-delta","index":0,"delta":{"message":{"tool_calls":{"function":{"arguments":"\\"Paris\\"}"}}}}}',
    'event: tool-call-end\ndata: {"type":"tool-call-end","index":0}',
    'event: tool-call-start\ndata: {"type":"tool-call-start","index":1,"delta":{"message":{"tool_calls":{"id":"get_weather_w3j7x0bn","type":"function","function":{"name":"get_weather","arguments":""}}}}}',
    'event: tool-call-delta\ndata: {"type":"tool-call-delta","index":1,"delta":{"message":{"tool_calls":{"function":{"arguments":"{\\"city\\":\\"Rome\\"}"}}}}}',
    'event: tool-call-end\ndata: {"type":"tool-call-end","index":1}',
    'event: message-end\ndata: {"type":"message-end","delta":{"finish_reason":"TOOL_CALL","usage":{"billed_units":{"input_tokens":61,"output_tokens":44},"tokens":{"input_tokens":1180,"output_tokens":102},"cached_tokens":0}}}',
]
# Our OpenAI-shaped conversation of §6.3: the calls (their plan kept), then the results.
TURN: dict[str, Any] = {
    "model": "command-a-03-2025",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call.model_dump() for call in PARIS_AND_ROME],
            "vendor_state": {"cohere_tool_plan": PLAN},
        },
        {"role": "tool", "tool_call_id": "get_weather_kq8v2r1m", "content": '{"temp_c": 18}'},
        {"role": "tool", "tool_call_id": "get_weather_w3j7x0bn", "content": '{"temp_c": 24}'},
    ],
    "tools": [WEATHER_TOOL],
    "tool_choice": "required",
    "seed": 7,
}
DECLARED = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": WEATHER_SCHEMA,
    },
}


def cohere(recorder: Recorder) -> CohereVendor:
    config = VendorConfig(type="cohere", api_key=SecretStr(KEY))
    return CohereVendor("cohere", config, recorder.client())


def reply_with(text: str) -> dict[str, Any]:
    return {
        "id": "r1",
        "finish_reason": "COMPLETE",
        "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
        "usage": {"tokens": {"input_tokens": 5, "output_tokens": 2}},
    }


async def test_tools_the_assistant_turn_with_its_plan_and_results_go_out_as_documented(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(json_response(200, reply_with("Paris 18, Rome 24.")))
    await cohere(rec).complete(validated(TURN))
    assert rec.last_json() == {
        "model": "command-a-03-2025",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "tool_plan": PLAN,
                "tool_calls": [call.model_dump() for call in PARIS_AND_ROME],
            },
            {"role": "tool", "tool_call_id": "get_weather_kq8v2r1m", "content": '{"temp_c": 18}'},
            {"role": "tool", "tool_call_id": "get_weather_w3j7x0bn", "content": '{"temp_c": 24}'},
        ],
        # §6.1: OpenAI's declaration; a strict tool turns on the request-wide switch.
        "tools": [DECLARED],
        "strict_tools": True,
        "tool_choice": "REQUIRED",
        "seed": 7,
    }


@pytest.mark.parametrize(
    ("choice", "sent"),
    [(None, None), ("auto", None), ("none", "NONE"), ("required", "REQUIRED")],
)
async def test_tool_choice_modes_are_cohere_words_and_auto_is_left_out(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    choice: str | None,
    sent: str | None,
) -> None:
    rec = recorder(json_response(200, reply_with("ok")))
    plain_tool = {"type": "function", "function": {"name": "now"}}
    await cohere(rec).complete(make_request(tools=[plain_tool], tool_choice=choice))
    body = rec.last_json()
    assert body.get("tool_choice") == sent
    assert body["tools"] == [plain_tool]
    assert "strict_tools" not in body


async def test_a_named_tool_choice_sends_only_that_tool_and_requires_a_call(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, TOOL_REPLY))
    request = make_request(
        tools=[{"type": "function", "function": {"name": "get_time"}}, WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    await cohere(rec).complete(request)
    body = rec.last_json()
    assert body["tools"] == [DECLARED]
    assert body["tool_choice"] == "REQUIRED"


async def test_image_parts_go_out_as_openai_parts(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    parts = [
        {"type": "text", "text": "Describe this chart."},
        {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "auto"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/p.jpg"}},
    ]
    rec = recorder(json_response(200, reply_with("A chart.")))
    await cohere(rec).complete(make_request(messages=[{"role": "user", "content": parts}]))
    assert rec.last_json()["messages"] == [{"role": "user", "content": parts}]


@pytest.mark.parametrize(
    ("fmt", "sent"),
    [
        ({"type": "text"}, {"type": "text"}),
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA}},
            {"type": "json_object", "json_schema": ANSWER_SCHEMA},
        ),
    ],
    ids=["text", "json_object", "json_schema"],
)
async def test_response_formats_are_json_object_with_an_optional_schema(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    fmt: dict[str, Any],
    sent: dict[str, Any],
) -> None:
    rec = recorder(json_response(200, reply_with('{"city":"Paris","temp_c":null}')))
    await cohere(rec).complete(make_request(response_format=fmt))
    assert rec.last_json()["response_format"] == sent


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
    ],
    ids=["json-beside-tools", "one-call-per-reply"],
)
async def test_what_cohere_has_no_form_of_is_refused_naming_the_field(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    fields: dict[str, Any],
    field: str,
) -> None:
    rec = recorder(json_response(200, reply_with("x")))
    with pytest.raises(InvalidRequest, match=rf"^{field}: Cohere") as caught:
        await cohere(rec).complete(make_request(tools=[WEATHER_TOOL], **fields))
    assert caught.value.vendor == "cohere"
    assert rec.requests == []


async def test_a_reply_with_calls_keeps_its_plan_in_vendor_state(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    response = await cohere(recorder(json_response(200, TOOL_REPLY))).complete(make_request())
    assert response.tool_calls == PARIS_AND_ROME
    assert response.content == ""
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.vendor_finish_reason == "TOOL_CALL"
    assert response.vendor_state == {"cohere_tool_plan": PLAN}
    assert response.usage == Usage(prompt_tokens=1180, completion_tokens=102)
    message = response.to_message()
    assert message.vendor_state == {"cohere_tool_plan": PLAN}
    assert message.tool_calls == PARIS_AND_ROME


async def test_the_plan_goes_back_on_the_next_turn_through_to_message(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    first = await cohere(recorder(json_response(200, TOOL_REPLY))).complete(make_request())
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        first.to_message(),
        *({"role": "tool", "tool_call_id": c.id, "content": "18"} for c in first.tool_calls),
    ]
    rec = recorder(json_response(200, reply_with("Both 18.")))
    await cohere(rec).complete(make_request(messages=messages, tools=[WEATHER_TOOL]))
    assistant = rec.last_json()["messages"][1]
    assert assistant["tool_plan"] == PLAN
    assert assistant["tool_calls"][0]["id"] == "get_weather_kq8v2r1m"


async def test_cached_tokens_are_the_cached_part_of_the_prompt(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    body = {**reply_with("hi"), "usage": {**TOOL_REPLY["usage"], "cached_tokens": 1024}}
    response = await cohere(recorder(json_response(200, body))).complete(make_request())
    assert response.usage == Usage(
        prompt_tokens=1180, completion_tokens=102, cached_prompt_tokens=1024
    )


async def test_a_streamed_reply_gathers_the_plan_and_the_calls_by_index(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(sse_response(TOOL_STREAM))
    deltas = [d async for d in cohere(rec).stream(make_request(stream=True))]
    final = deltas[-1]
    assert "".join(d.text for d in deltas) == ""
    assert list(final.tool_calls) == PARIS_AND_ROME
    assert final.finish_reason is FinishReason.TOOL_CALLS
    assert final.vendor_state == {"cohere_tool_plan": PLAN}
    assert final.usage == Usage(prompt_tokens=1180, completion_tokens=102)


def test_a_stream_without_calls_has_no_vendor_state() -> None:
    events = [
        ServerSentEvent(
            event="content-delta",
            data=json.dumps(
                {"type": "content-delta", "delta": {"message": {"content": {"text": "hi"}}}}
            ),
        ),
        ServerSentEvent(
            event="message-end",
            data=json.dumps({"type": "message-end", "delta": {"finish_reason": "COMPLETE"}}),
        ),
    ]
    final = feed_all(ChatStreamParser("cohere"), events)[-1]
    assert final.vendor_state is None
    assert final.tool_calls == ()
    assert final.finish_reason is FinishReason.STOP
