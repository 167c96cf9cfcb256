"""Anthropic Messages for tools, images, structured output and seed (§3 of the tools page).

Bodies go out exactly as the documentation's examples show them; replies and
streams with `tool_use` blocks come back as our `ToolCall`s, thinking blocks
survive the round trip through `vendor_state`, and usage counts the cache.
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
    FunctionCall,
    InvalidRequest,
    InvalidVendorOutput,
    Request,
    ToolCall,
    Usage,
    VendorConfig,
)
from dispatcher.runner.vendor_call import call_vendor
from dispatcher.vendors.anthropic import (
    AnthropicVendor,
    MessagesStreamParser,
    build_body,
)
from dispatcher.vendors.anthropic_blocks import JSON_OBJECT_INSTRUCTION, closed_schema
from dispatcher.vendors.base import feed_all
from tests.chat_samples import PNG_URL, TOOL_TURN, WEATHER_SCHEMA, WEATHER_TOOL
from tests.unit.vendors.conftest import Recorder, json_response, sse_response

KEY = "sk-ant-api03-test-0123456789abcdefABCDEF"
MODEL = "claude-x"
PNG_DATA = PNG_URL.partition(",")[2]

# §3.2: a reply with text and two parallel calls.
TOOL_REPLY: dict[str, Any] = {
    "id": "msg_01Hq",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [
        {"type": "text", "text": "Checking both cities."},
        {"type": "tool_use", "id": "toolu_01A9", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_01B3", "name": "get_weather", "input": {"city": "Rome"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 420, "output_tokens": 96},
}
THINKING = {"type": "thinking", "thinking": "Both cities, one call each.", "signature": "EqQBCkgI"}
REDACTED = {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3p"}
# §3.8: usage with cache reads and thinking tokens.
CACHED_USAGE = {
    "input_tokens": 38,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 2048,
    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 512,
    "output_tokens_details": {"thinking_tokens": 380},
}


def sse(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}"


MESSAGE_START = sse(
    "message_start",
    {
        "message": {
            "id": "msg_01Hq",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [],
            "stop_reason": None,
            "usage": {
                "input_tokens": 38,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 2048,
                "output_tokens": 1,
            },
        }
    },
)
# §3.5: a text block, then a call whose input comes in fragments under block index 1.
TOOL_STREAM = [
    MESSAGE_START,
    sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    sse(
        "content_block_delta",
        {"index": 0, "delta": {"type": "text_delta", "text": "Checking."}},
    ),
    sse("content_block_stop", {"index": 0}),
    sse(
        "content_block_start",
        {
            "index": 1,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_01A9",
                "name": "get_weather",
                "input": {},
            },
        },
    ),
    sse(
        "content_block_delta",
        {"index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
    ),
    sse(
        "content_block_delta",
        {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city": "Pa'}},
    ),
    sse(
        "content_block_delta",
        {"index": 1, "delta": {"type": "input_json_delta", "partial_json": 'ris"}'}},
    ),
    sse("content_block_stop", {"index": 1}),
    sse(
        "content_block_start",
        {
            "index": 2,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_01C0",
                "name": "get_time",
                "input": {},
            },
        },
    ),
    sse("content_block_stop", {"index": 2}),
    sse(
        "message_delta",
        {
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 96},
        },
    ),
    sse("message_stop", {}),
]
THINKING_STREAM = [
    MESSAGE_START,
    sse("content_block_start", {"index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
    sse(
        "content_block_delta",
        {"index": 0, "delta": {"type": "thinking_delta", "thinking": "Both "}},
    ),
    sse(
        "content_block_delta",
        {"index": 0, "delta": {"type": "thinking_delta", "thinking": "cities, one call each."}},
    ),
    sse(
        "content_block_delta",
        {"index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCkgI"}},
    ),
    sse("content_block_stop", {"index": 0}),
    sse("content_block_start", {"index": 1, "content_block": REDACTED}),
    sse("content_block_stop", {"index": 1}),
    sse("content_block_start", {"index": 2, "content_block": {"type": "text", "text": ""}}),
    sse("content_block_delta", {"index": 2, "delta": {"type": "text_delta", "text": "Hi"}}),
    sse("content_block_stop", {"index": 2}),
    sse(
        "message_delta",
        {
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 7},
        },
    ),
    sse("message_stop", {}),
]


def call(call_id: str, name: str, arguments: str) -> ToolCall:
    return ToolCall(id=call_id, function=FunctionCall(name=name, arguments=arguments))


def vendor(recorder: Recorder) -> AnthropicVendor:
    config = VendorConfig(type="anthropic", api_key=SecretStr(KEY))
    return AnthropicVendor("anthropic", config, recorder.client())


def request(**fields: Any) -> Request:
    return Request.model_validate({"model": MODEL, **fields})


def events(lines: list[str]) -> list[ServerSentEvent]:
    out = []
    for line in lines:
        head, _, data = line.partition("\ndata: ")
        out.append(ServerSentEvent(event=head.removeprefix("event: "), data=data))
    return out


TIME_TOOL = {"type": "function", "function": {"name": "get_time"}}
USER = {"role": "user", "content": "What is the weather in Paris and Rome?"}
ASKED = {
    "role": "assistant",
    "content": "Checking both cities.",
    "tool_calls": [
        {"id": "toolu_01A9", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "toolu_01B3", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
    ],
}


# --- requests ---------------------------------------------------------------------------


def test_tools_and_the_tool_choice_go_out_flat_with_input_schema() -> None:
    body = build_body(
        request(messages=[USER], tools=[WEATHER_TOOL], parallel_tool_calls=False),
        MODEL,
        stream=False,
    )
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "input_schema": WEATHER_SCHEMA,
            "strict": True,
        }
    ]
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", False, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            False,
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        ),
        (None, True, None),
    ],
)
def test_tool_choice_maps_as_the_table_of_section_3_1_says(
    choice: Any, parallel: bool | None, expected: dict[str, Any] | None
) -> None:
    fields: dict[str, Any] = {"messages": [USER], "tools": [WEATHER_TOOL]}
    if choice is not None:
        fields["tool_choice"] = choice
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    body = build_body(request(**fields), MODEL, stream=False)
    assert body.get("tool_choice") == expected


def test_a_tool_without_parameters_gets_an_empty_object_schema() -> None:
    tool = {"type": "function", "function": {"name": "get_time"}}
    body = build_body(request(messages=[USER], tools=[tool]), MODEL, stream=False)
    assert body["tools"] == [
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
    ]


def test_calls_and_their_results_become_tool_use_and_one_user_turn_of_tool_results() -> None:
    turn = [
        {"role": "system", "content": "Be brief."},
        USER,
        ASKED,
        {"role": "tool", "tool_call_id": "toolu_01A9", "content": '{"temp_c":18}'},
        {"role": "tool", "tool_call_id": "toolu_01B3", "content": "lookup failed: timeout"},
        {"role": "user", "content": "Answer in one sentence."},
    ]
    body = build_body(request(messages=turn, tools=[WEATHER_TOOL]), MODEL, stream=False)
    assert body["system"] == "Be brief."
    assert body["messages"] == [
        {"role": "user", "content": "What is the weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both cities."},
                {
                    "type": "tool_use",
                    "id": "toolu_01A9",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_01B3",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A9", "content": '{"temp_c":18}'},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01B3",
                    "content": "lookup failed: timeout",
                },
                {"type": "text", "text": "Answer in one sentence."},
            ],
        },
    ]


def test_an_assistant_call_without_text_is_tool_use_blocks_only_and_empty_arguments_are_an_empty_input() -> (
    None
):
    asked = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "toolu_1", "function": {"name": "get_time", "arguments": ""}}]}  # fmt: skip
    turn = [USER, asked, {"role": "tool", "tool_call_id": "toolu_1", "content": "noon"}]
    tools = [{"type": "function", "function": {"name": "get_time"}}]
    body = build_body(request(messages=turn, tools=tools), MODEL, stream=False)
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "noon"}],
        },
    ]


def test_call_arguments_that_are_not_a_json_object_are_refused_naming_the_message() -> None:
    asked = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "toolu_1", "function": {"name": "get_weather", "arguments": "[1]"}}]}  # fmt: skip
    turn = [USER, asked, {"role": "tool", "tool_call_id": "toolu_1", "content": "x"}]
    with pytest.raises(InvalidRequest, match=r"messages\[1\]\.tool_calls.*toolu_1"):
        build_body(request(messages=turn, tools=[WEATHER_TOOL]), MODEL, stream=False)


def test_images_become_base64_and_url_sources_as_section_3_7_shows() -> None:
    parts = [
        {"type": "text", "text": "Compare these two."},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": PNG_URL}},
    ]
    body = build_body(request(messages=[{"role": "user", "content": parts}]), MODEL, stream=False)
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare these two."},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG_DATA},
                },
            ],
        }
    ]


def test_a_json_schema_format_is_output_config_format_with_every_object_closed() -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {
                "type": "array",
                "items": {"type": "object", "properties": {"t": {"type": "number"}}},
            },
        },
        "required": ["city"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    body = build_body(request(messages=[USER], response_format=fmt), MODEL, stream=False)
    assert body["output_config"] == {
        "format": {
            "type": "json_schema",
            "schema": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"t": {"type": "number"}},
                            "additionalProperties": False,
                        },
                    },
                },
                "required": ["city"],
                "additionalProperties": False,
            },
        }
    }
    assert "output_format" not in body
    assert "system" not in body


def test_closing_a_schema_keeps_what_it_says_and_reaches_defs_and_any_of() -> None:
    schema = {
        "$defs": {"p": {"type": "object", "properties": {"x": {"type": "integer"}}}},
        "anyOf": [{"$ref": "#/$defs/p"}, {"type": "object", "additionalProperties": True}],
    }
    assert closed_schema(schema) == {
        "$defs": {
            "p": {
                "type": "object",
                "properties": {"x": {"type": "integer"}},
                "additionalProperties": False,
            }
        },
        "anyOf": [{"$ref": "#/$defs/p"}, {"type": "object", "additionalProperties": True}],
    }


def test_extra_body_sets_output_config_effort_beside_the_format_but_never_the_format() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": WEATHER_SCHEMA}}
    ask = request(
        messages=[USER], response_format=fmt, extra_body={"output_config": {"effort": "low"}}
    )
    body = build_body(ask, MODEL, stream=False)
    assert body["output_config"] == {
        "effort": "low",
        "format": {"type": "json_schema", "schema": WEATHER_SCHEMA},
    }
    with pytest.raises(ValueError, match=r"output_config\.format"):
        request(messages=[USER], extra_body={"output_config": {"format": {"type": "json_schema"}}})
    with pytest.raises(ValueError, match="output_format"):
        request(messages=[USER], extra_body={"output_format": {"type": "json_schema"}})


def test_json_object_is_an_instruction_after_the_system_prompt() -> None:
    turn = [{"role": "system", "content": "Be brief."}, USER]
    body = build_body(
        request(messages=turn, response_format={"type": "json_object"}), MODEL, stream=False
    )
    assert body["system"] == "Be brief.\n\n" + JSON_OBJECT_INSTRUCTION
    assert "output_config" not in body


def test_a_seed_is_refused_naming_the_field() -> None:
    with pytest.raises(
        InvalidRequest, match=r"^seed: Anthropic has no repeatable sampling"
    ) as caught:
        build_body(request(messages=[USER], seed=7), MODEL, stream=False)
    assert caught.value.retryable is False


async def test_the_whole_section_0_1_request_is_refused_only_for_its_seed(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(json_response(200, TOOL_REPLY))
    with pytest.raises(InvalidRequest, match="seed") as caught:
        await vendor(rec).complete(Request.model_validate(TOOL_TURN))
    assert caught.value.vendor == "anthropic"
    assert rec.requests == []
    await vendor(rec).complete(Request.model_validate({**TOOL_TURN, "seed": None}))
    sent = rec.last_json()
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["output_config"]["format"]["type"] == "json_schema"


# --- replies ----------------------------------------------------------------------------


async def test_tool_use_blocks_become_tool_calls_with_arguments_as_json_text(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(json_response(200, TOOL_REPLY))
    reply = await vendor(rec).complete(request(messages=[USER], tools=[WEATHER_TOOL]))
    assert reply.finish_reason is FinishReason.TOOL_CALLS
    assert reply.vendor_finish_reason == "tool_use"
    assert reply.content == "Checking both cities."
    assert reply.tool_calls == [
        call("toolu_01A9", "get_weather", '{"city":"Paris"}'),
        call("toolu_01B3", "get_weather", '{"city":"Rome"}'),
    ]
    assert reply.usage == Usage(prompt_tokens=420, completion_tokens=96)
    assert reply.vendor_state is None


async def test_thinking_blocks_ride_in_vendor_state_and_go_back_first_in_the_next_turn(
    recorder: Callable[..., Recorder],
) -> None:
    body = {**TOOL_REPLY, "content": [THINKING, REDACTED, *TOOL_REPLY["content"]]}
    rec = recorder(json_response(200, body))
    reply = await vendor(rec).complete(request(messages=[USER], tools=[WEATHER_TOOL]))
    assert reply.vendor_state == {"anthropic_thinking": [THINKING, REDACTED]}
    assert reply.content == "Checking both cities."

    turn = [
        Request.model_validate({"model": MODEL, "messages": [USER]}).messages[0],
        reply.to_message(),
        {"role": "tool", "tool_call_id": "toolu_01A9", "content": '{"temp_c":18}'},
        {"role": "tool", "tool_call_id": "toolu_01B3", "content": '{"temp_c":24}'},
    ]
    await vendor(rec).complete(request(messages=turn, tools=[WEATHER_TOOL]))
    # §3.3: the assistant message goes back with all blocks as received.
    assert rec.last_json()["messages"][1] == {"role": "assistant", "content": body["content"]}


async def test_usage_counts_cache_reads_and_writes_in_the_prompt_and_thinking_as_reasoning(
    recorder: Callable[..., Recorder],
) -> None:
    body = {**TOOL_REPLY, "usage": {**CACHED_USAGE, "cache_creation_input_tokens": 10}}
    reply = await vendor(recorder(json_response(200, body))).complete(request(messages=[USER]))
    assert reply.usage == Usage(
        prompt_tokens=38 + 10 + 2048,
        completion_tokens=512,
        cached_prompt_tokens=2048,
        reasoning_tokens=380,
    )


async def test_a_json_schema_reply_is_the_text_block_parsed_by_the_runner(
    recorder: Callable[..., Recorder],
) -> None:
    text = '{"city":"Paris"}'
    body = {**TOOL_REPLY, "content": [{"type": "text", "text": text}], "stop_reason": "end_turn"}
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": WEATHER_SCHEMA, "strict": True},
    }
    anthropic = vendor(recorder(json_response(200, body)))
    reply = await call_vendor(anthropic, request(messages=[USER], response_format=fmt), MODEL)
    assert reply.parsed == {"city": "Paris"}
    assert reply.content == text


async def test_a_json_object_reply_that_is_not_json_fails_keeping_the_text(
    recorder: Callable[..., Recorder],
) -> None:
    body = {
        **TOOL_REPLY,
        "content": [{"type": "text", "text": "Sure! {"}],
        "stop_reason": "end_turn",
    }
    anthropic = vendor(recorder(json_response(200, body)))
    with pytest.raises(InvalidVendorOutput) as caught:
        await call_vendor(
            anthropic, request(messages=[USER], response_format={"type": "json_object"}), MODEL
        )
    assert caught.value.raw_text == "Sure! {"


# --- streams ----------------------------------------------------------------------------


def test_a_streamed_call_is_assembled_from_input_json_deltas_by_block_index() -> None:
    *deltas, final = feed_all(MessagesStreamParser("anthropic"), events(TOOL_STREAM))
    assert [d.text for d in deltas] == ["Checking."]
    assert final.finish_reason is FinishReason.TOOL_CALLS
    assert final.tool_calls == (
        call("toolu_01A9", "get_weather", '{"city": "Paris"}'),
        call("toolu_01C0", "get_time", ""),
    )
    assert final.tool_calls[1].parsed_arguments() == {}
    # message_delta leaves out the input counts: message_start's stay.
    assert final.usage == Usage(
        prompt_tokens=38 + 100 + 2048, completion_tokens=96, cached_prompt_tokens=2048
    )


def test_streamed_thinking_blocks_are_rebuilt_as_the_whole_reply_holds_them() -> None:
    *_, final = feed_all(MessagesStreamParser("anthropic"), events(THINKING_STREAM))
    assert final.vendor_state == {
        "anthropic_thinking": [
            {
                "type": "thinking",
                "thinking": "Both cities, one call each.",
                "signature": "EqQBCkgI",
            },
            REDACTED,
        ]
    }
    assert final.tool_calls == ()


async def test_a_streamed_tool_turn_reaches_the_response_through_the_runner(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(sse_response(TOOL_STREAM))
    reply = await call_vendor(
        vendor(rec), request(messages=[USER], tools=[WEATHER_TOOL, TIME_TOOL], stream=True), MODEL
    )
    assert rec.last_json()["stream"] is True
    assert reply.content == "Checking."
    assert reply.finish_reason is FinishReason.TOOL_CALLS
    assert [(c.id, c.parsed_arguments()) for c in reply.tool_calls] == [
        ("toolu_01A9", {"city": "Paris"}),
        ("toolu_01C0", {}),
    ]


def test_a_cut_off_stream_still_needs_message_stop() -> None:
    parser = MessagesStreamParser("anthropic")
    for item in events(TOOL_STREAM[:-1]):
        parser.feed(item)
    with pytest.raises(Exception, match="message_stop"):
        parser.finish()


async def test_streamed_thinking_reaches_the_response_and_its_next_turn(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(sse_response(THINKING_STREAM))
    reply = await call_vendor(vendor(rec), request(messages=[USER], stream=True), MODEL)
    assert reply.vendor_state == {
        "anthropic_thinking": [
            {
                "type": "thinking",
                "thinking": "Both cities, one call each.",
                "signature": "EqQBCkgI",
            },
            REDACTED,
        ]
    }
    body = build_body(request(messages=[USER, reply.to_message()]), MODEL, stream=False)
    assert [block["type"] for block in body["messages"][1]["content"]] == [
        "thinking",
        "redacted_thinking",
        "text",
    ]


async def test_streamed_call_pieces_are_numbered_over_calls_only_not_blocks(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(sse_response(TOOL_STREAM))
    ask = request(messages=[USER], tools=[WEATHER_TOOL, TIME_TOOL], stream=True)
    pieces = [
        (piece.index, piece.id, piece.name, piece.arguments)
        async for delta in vendor(rec).stream(ask)
        for piece in delta.tool_call_deltas
    ]
    # Block indexes 1 and 2 (after the text block) are calls 0 and 1 (§0.7).
    assert pieces == [
        (0, "toolu_01A9", "get_weather", ""),
        (0, None, None, '{"city": "Pa'),
        (0, None, None, 'ris"}'),
        (1, "toolu_01C0", "get_time", ""),
    ]
