"""Ollama's /api/chat for tools, images, formats and seed (§5 of the tools page).

Bodies go out as the documentation's examples show them (arguments as JSON
objects, tool results with `tool_name` and `tool_call_id`, bare base64
`images`, `format`, `options.seed`); what has no form on the wire (a forced
tool choice, one call per reply, an image by URL) is refused naming the
field; replies and streams with calls come back as our `ToolCall`s.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from dispatcher import FinishReason, InvalidRequest, Request, ToolCall, VendorConfig
from dispatcher.vendors.base import feed_all
from dispatcher.vendors.ollama import ChatNdjsonParser, OllamaVendor, minted_id
from producer.checks import validated
from tests.chat_samples import ANSWER_SCHEMA, PNG_URL, WEATHER_SCHEMA, WEATHER_TOOL
from tests.unit.vendors.conftest import Recorder, json_response, ndjson_response

# §5.2: a reply with two calls, ids and indexes from a recent server.
TOOL_REPLY: dict[str, Any] = {
    "model": "qwen-x",
    "created_at": "2026-11-02T09:00:00Z",
    "message": {
        "role": "assistant",
        "content": "",
        "thinking": "The user wants two cities…",
        "tool_calls": [
            {
                "id": "call_x7k2m9qa",
                "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}},
            },
            {
                "id": "call_p3n8w1ze",
                "function": {"index": 1, "name": "get_weather", "arguments": {"city": "Rome"}},
            },
        ],
    },
    "done": True,
    "done_reason": "stop",
    "prompt_eval_count": 130,
    "eval_count": 64,
}
# §5.4: the same calls streamed, each whole on its own `done: false` line.
TOOL_STREAM = [
    '{"model":"qwen-x","created_at":"2026-11-02T09:00:00Z","message":{"role":"assistant","content":"","tool_calls":[{"id":"call_x7k2m9qa","function":{"index":0,"name":"get_weather","arguments":{"city":"Paris"}}}]},"done":false}',
    '{"model":"qwen-x","created_at":"2026-11-02T09:00:00Z","message":{"role":"assistant","content":"","tool_calls":[{"id":"call_p3n8w1ze","function":{"index":1,"name":"get_weather","arguments":{"city":"Rome"}}}]},"done":false}',
    '{"model":"qwen-x","created_at":"2026-11-02T09:00:01Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":130,"eval_count":64}',
]
PARIS_AND_ROME = [
    ToolCall(id="call_x7k2m9qa", function={"name": "get_weather", "arguments": '{"city":"Paris"}'}),
    ToolCall(id="call_p3n8w1ze", function={"name": "get_weather", "arguments": '{"city":"Rome"}'}),
]
# Our OpenAI-shaped conversation of §5.3: the two calls, then their results.
TURN: dict[str, Any] = {
    "model": "qwen-x",
    "messages": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call.model_dump() for call in PARIS_AND_ROME],
        },
        {"role": "tool", "tool_call_id": "call_x7k2m9qa", "content": "18 °C"},
        {"role": "tool", "tool_call_id": "call_p3n8w1ze", "content": "24 °C"},
    ],
    "tools": [WEATHER_TOOL],
    "tool_choice": "auto",
}


def ollama(recorder: Recorder) -> OllamaVendor:
    config = VendorConfig(type="ollama", base_url="http://localhost:11434")
    return OllamaVendor("ollama", config, recorder.client())


def reply_with(content: str, **message: Any) -> dict[str, Any]:
    return {
        "model": "qwen-x",
        "message": {"role": "assistant", "content": content, **message},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 10,
        "eval_count": 2,
    }


async def test_tools_calls_and_results_go_out_as_the_docs_show_them(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(json_response(200, reply_with("Paris 18 °C, Rome 24 °C.")))
    await ollama(rec).complete(validated(TURN))
    assert rec.last_json() == {
        "model": "qwen-x",
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_x7k2m9qa",
                        "function": {
                            "index": 0,
                            "name": "get_weather",
                            "arguments": {"city": "Paris"},
                        },
                    },
                    {
                        "id": "call_p3n8w1ze",
                        "function": {
                            "index": 1,
                            "name": "get_weather",
                            "arguments": {"city": "Rome"},
                        },
                    },
                ],
            },
            {
                "role": "tool",
                "content": "18 °C",
                "tool_name": "get_weather",
                "tool_call_id": "call_x7k2m9qa",
            },
            {
                "role": "tool",
                "content": "24 °C",
                "tool_name": "get_weather",
                "tool_call_id": "call_p3n8w1ze",
            },
        ],
        # §5.1: OpenAI's declaration, without `strict` (no such flag on Ollama).
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather for a city",
                    "parameters": WEATHER_SCHEMA,
                },
            }
        ],
        "stream": False,
    }


async def test_thinking_kept_in_vendor_state_goes_back_with_the_assistant_turn(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(json_response(200, reply_with("ok")))
    turn = json.loads(json.dumps(TURN))
    turn["messages"][1]["vendor_state"] = {"ollama_thinking": "The user wants two cities…"}
    await ollama(rec).complete(validated(turn))
    assistant = rec.last_json()["messages"][1]
    assert assistant["thinking"] == "The user wants two cities…"
    assert assistant["content"] == ""


async def test_data_url_images_go_in_images_as_bare_base64_and_text_parts_join(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    parts = [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "low"}},
    ]
    rec = recorder(json_response(200, reply_with("A dot.")))
    await ollama(rec).complete(make_request(messages=[{"role": "user", "content": parts}]))
    assert rec.last_json()["messages"] == [
        {
            "role": "user",
            "content": "What is in this image?",
            "images": [PNG_URL.removeprefix("data:image/png;base64,")],
        }
    ]


async def test_an_https_image_is_refused_naming_the_field(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    parts = [
        {"type": "text", "text": "And this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/p.jpg"}},
    ]
    rec = recorder(json_response(200, reply_with("no")))
    request = make_request(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": parts}]
    )
    with pytest.raises(InvalidRequest, match=r"messages\[1\]\.content\[1\]\.image_url\.url") as e:
        await ollama(rec).complete(request)
    assert "base64" in str(e.value)
    assert e.value.vendor == "ollama"
    assert not e.value.retryable
    assert rec.requests == []


@pytest.mark.parametrize(
    ("fmt", "sent"),
    [
        ({"type": "json_object"}, "json"),
        (
            {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA}},
            ANSWER_SCHEMA,
        ),
    ],
    ids=["json_object", "json_schema"],
)
async def test_a_json_format_is_format_and_seed_is_an_option(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    fmt: dict[str, Any],
    sent: Any,
) -> None:
    rec = recorder(json_response(200, reply_with('{"city":"Paris","temp_c":null}')))
    await ollama(rec).complete(make_request(response_format=fmt, seed=42))
    body = rec.last_json()
    assert body["format"] == sent
    assert body["options"] == {"seed": 42}


async def test_a_text_format_sends_no_format(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, reply_with("hi")))
    await ollama(rec).complete(make_request(response_format={"type": "text"}))
    assert "format" not in rec.last_json()


async def test_tool_choice_none_sends_no_tools(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, reply_with("hi")))
    await ollama(rec).complete(make_request(tools=[WEATHER_TOOL], tool_choice="none"))
    assert "tools" not in rec.last_json()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "tool_choice"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
    ],
    ids=["required", "named", "one-call-per-reply"],
)
async def test_what_ollama_cannot_enforce_is_refused_naming_the_field(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    fields: dict[str, Any],
    field: str,
) -> None:
    rec = recorder(json_response(200, reply_with("hi")))
    with pytest.raises(InvalidRequest, match=rf"^{field}: Ollama cannot"):
        await ollama(rec).complete(make_request(tools=[WEATHER_TOOL], **fields))
    assert rec.requests == []


async def test_arguments_that_are_not_a_json_object_are_refused_naming_the_call(
    recorder: Callable[..., Recorder],
) -> None:
    turn = json.loads(json.dumps(TURN))
    turn["messages"][1]["tool_calls"][1]["function"]["arguments"] = '["Rome"]'
    with pytest.raises(InvalidRequest, match=r"messages\[1\]\.tool_calls\[1\]\.function"):
        await ollama(recorder(json_response(200, reply_with("x")))).complete(validated(turn))


async def test_a_reply_with_calls_parses_to_calls_usage_and_the_tool_calls_reason(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    response = await ollama(recorder(json_response(200, TOOL_REPLY))).complete(make_request())
    assert response.tool_calls == PARIS_AND_ROME
    assert response.content == ""
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.vendor_finish_reason == "stop"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (130, 64)
    assert response.vendor_state == {"ollama_thinking": "The user wants two cities…"}
    again = response.to_message()
    assert again.tool_calls == PARIS_AND_ROME
    assert again.vendor_state == response.vendor_state


async def test_calls_without_ids_get_stable_minted_ones(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    # Older servers (and the 0.6.3 SDK types): no id, no index.
    calls = [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]
    body = reply_with("", tool_calls=calls)
    first = await ollama(recorder(json_response(200, body))).complete(make_request())
    again = await ollama(recorder(json_response(200, body))).complete(make_request())
    (call,) = first.tool_calls
    assert call.id == minted_id(0, "get_weather", '{"city":"Oslo"}')
    assert call.id.startswith("call_")
    assert again.tool_calls == first.tool_calls
    assert call.parsed_arguments() == {"city": "Oslo"}


async def test_a_streamed_reply_gathers_whole_calls_from_its_lines(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(ndjson_response([json.loads(line) for line in TOOL_STREAM]))
    deltas = [delta async for delta in ollama(rec).stream(make_request(stream=True))]
    final = deltas[-1]
    assert final.vendor_state is None
    assert "".join(d.text for d in deltas) == ""
    assert list(final.tool_calls) == PARIS_AND_ROME
    assert final.finish_reason is FinishReason.TOOL_CALLS
    assert final.usage is not None
    assert final.usage.prompt_tokens == 130


def test_several_calls_on_one_line_and_minted_ids_count_across_lines() -> None:
    bare = {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    line = {"model": "m", "message": {"role": "assistant", "content": "", "tool_calls": [bare]}}
    two = {**line, "message": {**line["message"], "tool_calls": [bare, bare]}}
    done = {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True}
    deltas = feed_all(ChatNdjsonParser("ollama"), [json.dumps(x) for x in (line, two, done)])
    ids = [call.id for call in deltas[-1].tool_calls]
    assert ids == [minted_id(n, "get_weather", '{"city":"Oslo"}') for n in range(3)]
    assert len(set(ids)) == 3


def test_streamed_thinking_is_joined_into_the_final_deltas_vendor_state() -> None:
    think = [
        {"model": "m", "message": {"role": "assistant", "content": "", "thinking": t}}
        for t in ("Two ", "cities.")
    ]
    done = {"model": "m", "message": {"role": "assistant", "content": "ok"}, "done": True}
    deltas = feed_all(ChatNdjsonParser("ollama"), [json.dumps(x) for x in (*think, done)])
    final = deltas[-1]
    assert final.vendor_state == {"ollama_thinking": "Two cities."}
    assert "".join(d.text for d in deltas) == "ok"
