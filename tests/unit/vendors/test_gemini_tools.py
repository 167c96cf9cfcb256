"""Gemini's native forms of the chat surface: exact bodies and parsed replies (tools page, §4).

The bodies and replies are the wire-format notes' examples: functionDeclarations
and toolConfig, functionCall parts with a thoughtSignature, functionResponse
parts, inlineData and fileData images, responseMimeType with
responseJsonSchema, the seed, and usage with cached and thought tokens.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from httpx_sse import ServerSentEvent
from pydantic import SecretStr, ValidationError

from dispatcher import FinishReason, InvalidRequest, Message, Request, ToolCall, Usage, VendorConfig
from dispatcher.vendors.base import feed_all
from dispatcher.vendors.gemini import (
    GeminiVendor,
    GenerateContentStreamParser,
    generate_content_body,
    parse_generate_content,
)
from tests.unit.vendors.conftest import Recorder, json_response, sse_response

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
SIGNATURE = "EpkBCpYBAXLI2nw"
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
# §4.2: two parallel calls; only the first carries a signature.
CALL_REPLY: dict[str, Any] = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": SIGNATURE,
                    },
                    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                ],
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 95,
        "candidatesTokenCount": 24,
        "thoughtsTokenCount": 140,
        "totalTokenCount": 259,
    },
    "modelVersion": "gemini-x",
    "responseId": "q1Zr",
}


def request_of(**fields: Any) -> Request:
    return Request.model_validate({"model": "gemini-2.5-flash", **fields})


def vendor(recorder: Recorder) -> GeminiVendor:
    config = VendorConfig(type="gemini", api_key=SecretStr("AIza-test"))
    return GeminiVendor("gemini", config, recorder.client())


def test_tools_go_in_one_function_declarations_entry_with_their_json_schema() -> None:
    request = request_of(
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER, {"type": "function", "function": {"name": "get_time"}}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    body = generate_content_body(request)
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Current weather for a city",
                    "parametersJsonSchema": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
                {"name": "get_time"},
            ]
        }
    ]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }


@pytest.mark.parametrize(
    ("choice", "mode"), [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")]
)
def test_tool_choice_modes_map_to_function_calling_modes(choice: str, mode: str) -> None:
    request = request_of(
        messages=[{"role": "user", "content": "hi"}], tools=[WEATHER], tool_choice=choice
    )
    assert generate_content_body(request)["toolConfig"] == {"functionCallingConfig": {"mode": mode}}


def test_one_call_per_reply_has_no_gemini_form_and_is_refused() -> None:
    request = request_of(
        messages=[{"role": "user", "content": "hi"}], tools=[WEATHER], parallel_tool_calls=False
    )
    with pytest.raises(InvalidRequest, match="parallel_tool_calls"):
        generate_content_body(request)
    allowed = request.model_copy(update={"parallel_tool_calls": True})
    assert "toolConfig" not in generate_content_body(allowed)


def test_no_tools_and_no_choice_send_no_tool_fields() -> None:
    body = generate_content_body(request_of(messages=[{"role": "user", "content": "hi"}]))
    assert "tools" not in body
    assert "toolConfig" not in body
    assert "generationConfig" not in body


def test_a_reply_of_function_calls_is_a_tool_turn_with_minted_ids_and_kept_signatures() -> None:
    completion = parse_generate_content(CALL_REPLY)
    assert completion.finish_reason is FinishReason.TOOL_CALLS
    assert completion.vendor_finish_reason == "STOP"
    assert completion.text == ""
    assert completion.tool_calls == (
        ToolCall(
            id="call_q1Zr_0", function={"name": "get_weather", "arguments": '{"city":"Paris"}'}
        ),
        ToolCall(
            id="call_q1Zr_1", function={"name": "get_weather", "arguments": '{"city":"Rome"}'}
        ),
    )
    assert completion.vendor_state == {"gemini": {"signatures": {"call_q1Zr_0": SIGNATURE}}}
    # thoughtsTokenCount is not inside candidatesTokenCount: the completion adds it.
    assert completion.usage == Usage(
        prompt_tokens=95, completion_tokens=164, total_tokens=259, reasoning_tokens=140
    )


def test_a_call_without_a_response_id_gets_an_id_from_the_call_itself() -> None:
    reply = {**CALL_REPLY, "responseId": None}
    first = parse_generate_content(reply).tool_calls
    again = parse_generate_content(reply).tool_calls
    assert [c.id for c in first] == [c.id for c in again]
    assert first[0].id.startswith("call_")
    assert first[0].id.endswith("_0")
    assert first[0].id != first[1].id


def test_the_next_turn_sends_the_calls_back_with_their_signature_and_names_the_results() -> None:
    completion = parse_generate_content(CALL_REPLY)
    calls = completion.tool_calls
    assistant = Message(
        role="assistant", tool_calls=list(calls), vendor_state=completion.vendor_state
    )
    request = request_of(
        messages=[
            {"role": "user", "content": "Weather in Paris and Rome?"},
            assistant,
            {"role": "tool", "tool_call_id": calls[0].id, "content": '{"temp_c":18}'},
            {"role": "tool", "tool_call_id": calls[1].id, "content": "lookup failed: timeout"},
        ],
        tools=[WEATHER],
    )
    assert generate_content_body(request)["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": SIGNATURE,
                },
                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "name": "get_weather",
                        "response": {"output": {"temp_c": 18}},
                    }
                },
                {
                    "functionResponse": {
                        "name": "get_weather",
                        "response": {"output": "lookup failed: timeout"},
                    }
                },
            ],
        },
    ]


async def test_complete_keeps_the_signatures_so_to_message_hands_them_back(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(json_response(200, CALL_REPLY))
    request = request_of(messages=[{"role": "user", "content": "Paris and Rome"}], tools=[WEATHER])
    response = await vendor(rec).complete(request)
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert [c.id for c in response.tool_calls] == ["call_q1Zr_0", "call_q1Zr_1"]
    message = response.to_message()
    assert message.vendor_state == {"gemini": {"signatures": {"call_q1Zr_0": SIGNATURE}}}
    # The state survives the JSON a job record is stored as.
    assert Message.model_validate_json(message.model_dump_json()) == message


def test_a_call_id_gemini_gives_is_kept_and_sent_back_on_the_call_and_its_result() -> None:
    reply = json.loads(json.dumps(CALL_REPLY))
    reply["candidates"][0]["content"]["parts"] = [
        {"functionCall": {"id": "fc-7", "name": "get_weather", "args": {"city": "Oslo"}}}
    ]
    completion = parse_generate_content(reply)
    (call,) = completion.tool_calls
    assert call.id == "fc-7"
    assert completion.vendor_state == {"gemini": {"ids": ["fc-7"]}}
    request = request_of(
        messages=[
            {"role": "user", "content": "Oslo"},
            Message(role="assistant", tool_calls=[call], vendor_state=completion.vendor_state),
            {"role": "tool", "tool_call_id": "fc-7", "content": "-3"},
        ]
    )
    model, results = generate_content_body(request)["contents"][1:]
    assert model["parts"][0]["functionCall"]["id"] == "fc-7"
    assert results["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"output": -3}, "id": "fc-7"}}
    ]


def test_a_text_signature_goes_back_on_the_text_part() -> None:
    reply = json.loads(json.dumps(CALL_REPLY))
    reply["candidates"][0]["content"]["parts"] = [
        {"text": "It is sunny.", "thoughtSignature": "Zm9v"}
    ]
    completion = parse_generate_content(reply)
    assert completion.tool_calls == ()
    assert completion.finish_reason is FinishReason.STOP
    assert completion.vendor_state == {"gemini": {"text_signature": "Zm9v"}}
    request = request_of(
        messages=[
            {"role": "user", "content": "Weather?"},
            Message(role="assistant", content="It is sunny.", vendor_state=completion.vendor_state),
            {"role": "user", "content": "Thanks"},
        ]
    )
    assert generate_content_body(request)["contents"][1] == {
        "role": "model",
        "parts": [{"text": "It is sunny.", "thoughtSignature": "Zm9v"}],
    }


def test_another_vendors_state_is_not_sent_to_gemini() -> None:
    call = ToolCall(id="toolu_1", function={"name": "get_weather", "arguments": "{}"})
    request = request_of(
        messages=[
            {"role": "user", "content": "x"},
            Message(role="assistant", tool_calls=[call], vendor_state={"anthropic": []}),
            {"role": "tool", "tool_call_id": "toolu_1", "content": "ok"},
        ]
    )
    assert generate_content_body(request)["contents"][1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": {}}}],
    }


def test_images_become_inline_data_and_file_data() -> None:
    request = request_of(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ]
    )
    assert generate_content_body(request)["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "What is in these?"},
                {"inlineData": {"mimeType": "image/png", "data": PNG}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}},
            ],
        }
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("data:image/gif;base64,R0lGODlhAQABAAAAACw=", "image/gif"),
        ("https://example.com/photo?id=3", "does not end in"),
    ],
)
async def test_an_image_gemini_cannot_take_is_an_invalid_request_naming_the_vendor(
    recorder: Callable[..., Recorder], url: str, problem: str
) -> None:
    parts = [{"type": "image_url", "image_url": {"url": url}}]
    request = request_of(messages=[{"role": "user", "content": parts}])
    rec = recorder(json_response(200, CALL_REPLY))
    with pytest.raises(InvalidRequest, match=problem) as caught:
        await vendor(rec).complete(request)
    assert caught.value.vendor == "gemini"
    assert not rec.requests


def test_a_json_schema_format_and_the_seed_go_in_generation_config() -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "temp_c": {"type": ["number", "null"]}},
        "required": ["city"],
        "additionalProperties": False,
    }
    request = request_of(
        messages=[{"role": "user", "content": "Paris"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": True},
        },
        seed=7,
        max_tokens=100,
    )
    assert generate_content_body(request)["generationConfig"] == {
        "maxOutputTokens": 100,
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
        "seed": 7,
    }


def test_json_object_asks_for_json_without_a_schema_and_text_asks_nothing() -> None:
    asked = request_of(
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
    )
    assert generate_content_body(asked)["generationConfig"] == {
        "responseMimeType": "application/json"
    }
    text = request_of(
        messages=[{"role": "user", "content": "hi"}], response_format={"type": "text"}
    )
    assert "generationConfig" not in generate_content_body(text)


@pytest.mark.parametrize(
    "extra",
    [
        {"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}},
        {"generationConfig": {"responseJsonSchema": {"type": "object"}}},
        {"generationConfig": {"responseMimeType": "application/json"}},
        {"generationConfig": {"seed": 1}},
    ],
)
def test_extra_body_may_not_set_geminis_names_of_modelled_fields(extra: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="may not set"):
        request_of(messages=[{"role": "user", "content": "hi"}], extra_body=extra)


def test_usage_reads_cached_and_thought_tokens() -> None:
    usage = {
        "promptTokenCount": 2300,
        "cachedContentTokenCount": 2048,
        "candidatesTokenCount": 80,
        "thoughtsTokenCount": 310,
        "toolUsePromptTokenCount": 0,
        "totalTokenCount": 2690,
    }
    completion = parse_generate_content({**CALL_REPLY, "usageMetadata": usage})
    assert completion.usage == Usage(
        prompt_tokens=2300,
        completion_tokens=390,
        total_tokens=2690,
        cached_prompt_tokens=2048,
        reasoning_tokens=310,
    )


def _events(*chunks: dict[str, Any]) -> list[ServerSentEvent]:
    return [ServerSentEvent(data=json.dumps(chunk)) for chunk in chunks]


def test_streamed_calls_are_assembled_in_order_with_a_signature_on_a_later_part() -> None:
    head = {"modelVersion": "gemini-x", "responseId": "s9"}
    paris = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    rome = {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}
    parser = GenerateContentStreamParser("gemini")
    deltas = feed_all(
        parser,
        _events(
            {"candidates": [{"content": {"parts": [{"text": "Checking."}]}, "index": 0}], **head},
            {"candidates": [{"content": {"parts": [paris]}, "index": 0}], **head},
            {
                "candidates": [
                    {
                        "content": {"parts": [rome, {"text": "", "thoughtSignature": "c2ln"}]},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": CALL_REPLY["usageMetadata"],
                **head,
            },
        ),
    )
    final = deltas[-1]
    assert "".join(d.text for d in deltas) == "Checking."
    assert final.finish_reason is FinishReason.TOOL_CALLS
    assert [(c.id, c.arguments) for c in final.tool_calls] == [
        ("call_s9_0", '{"city":"Paris"}'),
        ("call_s9_1", '{"city":"Rome"}'),
    ]
    assert final.vendor_state == {"gemini": {"text_signature": "c2ln"}}
    assert final.usage is not None
    assert final.usage.reasoning_tokens == 140


async def test_a_streamed_call_reaches_the_final_delta_over_the_wire(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(sse_response([f"data: {json.dumps(CALL_REPLY)}"], eol="\r\n"))
    request = request_of(
        messages=[{"role": "user", "content": "Paris and Rome"}], tools=[WEATHER], stream=True
    )
    pieces: list[tuple[int, str | None, str | None, str]] = []
    final = None
    async for delta in vendor(rec).stream(request):
        pieces += [(p.index, p.id, p.name, p.arguments) for p in delta.tool_call_deltas]
        if delta.finish_reason is not None:
            final = delta
    # Each call goes out whole, as one piece, when its chunk arrives.
    assert pieces == [
        (0, "call_q1Zr_0", "get_weather", '{"city":"Paris"}'),
        (1, "call_q1Zr_1", "get_weather", '{"city":"Rome"}'),
    ]
    assert final is not None
    assert [c.id for c in final.tool_calls] == ["call_q1Zr_0", "call_q1Zr_1"]
    assert final.vendor_state == {"gemini": {"signatures": {"call_q1Zr_0": SIGNATURE}}}
    assert str(rec.last.url).endswith(":streamGenerateContent?alt=sse")
