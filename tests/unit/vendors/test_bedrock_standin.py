"""The stand-in's Bedrock Converse answers, read back by our own Bedrock client code.

Our request bodies (`converse_body`) go into the stand-in's parser; its replies
and event streams come out through `parse_converse` and `ConverseStreamParser`,
so both sides are checked against each other and against the wire-format notes
(tools page, section 7), and the refusals Converse makes are copied.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from dispatcher import FinishReason, Request
from dispatcher.errors import StreamBroken
from dispatcher.vendors.bedrock import ConverseStreamParser, converse_body, parse_converse
from dispatcher.vendors.event_stream import EventStreamDecoder
from producer.cli.tools.standin.bedrock import NEEDS_TOOL_CONFIG, BedrockFormat
from producer.cli.tools.standin.faults import Fault
from producer.cli.tools.standin.replies import Call, Refused, reply_to
from tests.chat_samples import PNG_URL, WEATHER_TOOL

MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"


def parse(body: dict[str, Any], action: str = "converse") -> Call:
    request = make_mocked_request(
        "POST", f"/model/{MODEL}/{action}", match_info={"model": MODEL, "action": action}
    )
    return BedrockFormat().parse(request, body)


def call_for(stream: bool = False, **fields: Any) -> Call:
    request = Request.model_validate({"model": MODEL, **fields})
    return parse(converse_body(request), "converse-stream" if stream else "converse")


def refusal(body: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(Refused) as caught:
        parse(body)
    response = caught.value.response
    assert response.status == 400
    return response.headers["x-amzn-ErrorType"].partition(":")[0], json.loads(
        response.text or "{}"
    )["message"]


def streamed(call: Call) -> bytes:
    stream = BedrockFormat().stream(call, reply_to(call), "r1")
    assert stream.content_type == "application/vnd.amazon.eventstream"
    return stream.opening + b"".join(stream.events) + stream.closing


def read_stream(body: bytes) -> tuple[str, Any]:
    parser = ConverseStreamParser("bedrock")
    text = "".join(delta.text for delta in parser.feed(body))
    return text, parser.finish()


def test_a_plain_reply_is_the_echo_with_converse_usage_and_end_turn() -> None:
    call = call_for(messages=[{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "Hello there"}])  # fmt: skip
    body = BedrockFormat().whole(call, reply_to(call), "r1")
    assert body["output"]["message"] == {
        "role": "assistant",
        "content": [{"text": "echo: Hello there"}],
    }
    assert body["stopReason"] == "end_turn"
    # Prompt words: "Be brief." and "Hello there"; the reply's three words.
    assert body["usage"] == {"inputTokens": 4, "outputTokens": 3, "totalTokens": 7}
    completion = parse_converse(body)
    assert (completion.text, completion.finish_reason) == ("echo: Hello there", FinishReason.STOP)


def test_max_tokens_and_stop_sequences_come_from_inference_config() -> None:
    call = call_for(messages=[{"role": "user", "content": "one two three four"}], max_tokens=2)
    body = BedrockFormat().whole(call, reply_to(call), "r1")
    assert body["stopReason"] == "max_tokens"
    assert parse_converse(body).finish_reason is FinishReason.LENGTH

    call = call_for(messages=[{"role": "user", "content": "one two STOP three"}], stop=["STOP"])
    body = BedrockFormat().whole(call, reply_to(call), "r1")
    assert body["stopReason"] == "stop_sequence"
    assert parse_converse(body).text == "echo: one two "


def test_a_stream_is_event_stream_frames_from_message_start_to_metadata() -> None:
    call = call_for(stream=True, messages=[{"role": "user", "content": "Stream this reply"}])
    assert call.stream
    body = streamed(call)
    messages = EventStreamDecoder().feed(body)
    kinds = [m.event_type for m in messages]
    assert kinds[0] == "messageStart"
    assert kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert set(kinds[1:-3]) == {"contentBlockDelta"}
    assert all(m.headers[":content-type"] == "application/json" for m in messages)
    # AWS pads every payload with a `p` field; readers ignore it.
    assert all("p" in json.loads(m.payload) for m in messages)

    text, final = read_stream(body)
    assert text == "echo: Stream this reply"
    assert final.finish_reason is FinishReason.STOP
    assert final.usage is not None
    assert final.usage.completion_tokens == 4


def test_a_stream_read_in_small_pieces_reads_the_same() -> None:
    body = streamed(call_for(stream=True, messages=[{"role": "user", "content": "a b c"}]))
    parser = ConverseStreamParser("bedrock")
    text = "".join(d.text for i in range(0, len(body), 7) for d in parser.feed(body[i : i + 7]))
    assert text == "echo: a b c"
    assert parser.finish().finish_reason is FinishReason.STOP


def test_a_tool_call_is_a_tool_use_block_with_an_object_input() -> None:
    call = call_for(messages=[{"role": "user", "content": "Paris"}], tools=[WEATHER_TOOL])
    body = BedrockFormat().whole(call, reply_to(call), "r1")
    (block,) = body["output"]["message"]["content"]
    use = block["toolUse"]
    assert use["toolUseId"].startswith("tooluse_")
    assert (use["name"], use["input"]) == ("get_weather", {"city": "Paris"})
    assert body["stopReason"] == "tool_use"
    (parsed,) = parse_converse(body).tool_calls
    assert (parsed.id, parsed.name, parsed.arguments) == (
        use["toolUseId"],
        "get_weather",
        '{"city":"Paris"}',
    )


def test_a_streamed_tool_call_opens_its_block_then_sends_input_fragments() -> None:
    call = call_for(stream=True, messages=[{"role": "user", "content": "Paris"}],
                    tools=[WEATHER_TOOL])  # fmt: skip
    body = streamed(call)
    messages = EventStreamDecoder().feed(body)
    starts = [json.loads(m.payload) for m in messages if m.event_type == "contentBlockStart"]
    (start,) = starts
    assert start["start"]["toolUse"]["name"] == "get_weather"
    fragments = [
        json.loads(m.payload)["delta"]["toolUse"]["input"]
        for m in messages
        if m.event_type == "contentBlockDelta"
    ]
    assert len(fragments) > 1
    assert json.loads("".join(fragments)) == {"city": "Paris"}
    _, final = read_stream(body)
    assert final.finish_reason is FinishReason.TOOL_CALLS
    (parsed,) = final.tool_calls
    assert parsed.arguments == '{"city":"Paris"}'


def test_tool_results_are_echoed_and_must_answer_the_calls_of_the_turn_before() -> None:
    question = {"role": "user", "content": "Paris"}
    use = {"id": "tooluse_a1", "type": "function",
           "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}  # fmt: skip
    assistant = {"role": "assistant", "content": None, "tool_calls": [use]}
    result = {"role": "tool", "tool_call_id": "tooluse_a1", "content": '{"temp_c": 18}'}
    call = call_for(messages=[question, assistant, result], tools=[WEATHER_TOOL])
    body = BedrockFormat().whole(call, reply_to(call), "r1")
    # Sent as a `json` block, echoed as compact JSON.
    assert parse_converse(body).text == 'echo: {"temp_c":18}'

    wire = converse_body(Request.model_validate(
        {"model": MODEL, "messages": [question, assistant, result], "tools": [WEATHER_TOOL]}
    ))  # fmt: skip
    wire["messages"][2]["content"][0]["toolResult"]["toolUseId"] = "tooluse_other"
    kind, message = refusal(wire)
    assert kind == "ValidationException"
    assert "tooluse_a1" in message

    del wire["toolConfig"]
    wire["messages"][2]["content"][0]["toolResult"]["toolUseId"] = "tooluse_a1"
    assert refusal(wire) == ("ValidationException", NEEDS_TOOL_CONFIG)


def test_a_json_schema_reply_follows_the_schema_sent_as_a_string() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    call = call_for(messages=[{"role": "user", "content": "Oslo"}], response_format=fmt)
    assert parse_converse(BedrockFormat().whole(call, reply_to(call), "r1")).text == (
        '{"city":"Oslo"}'
    )


def test_an_image_is_counted_and_a_bad_one_refused() -> None:
    parts = [{"type": "text", "text": "What is this?"},
             {"type": "image_url", "image_url": {"url": PNG_URL}}]  # fmt: skip
    call = call_for(messages=[{"role": "user", "content": parts}])
    assert reply_to(call).text == "echo: What is this? [1 image]"

    wire = converse_body(Request.model_validate(
        {"model": MODEL, "messages": [{"role": "user", "content": parts}]}
    ))  # fmt: skip
    wire["messages"][0]["content"][1]["image"]["format"] = "image/png"
    kind, message = refusal(wire)
    assert kind == "ValidationException"
    assert "format" in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]}, "alternate"),
        ({"messages": [{"role": "user", "content": [{"text": "  "}]}]}, "blank"),
        ({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "seed": 1}, "seed"),
        (
            {"messages": [{"role": "user", "content": [{"text": "hi"}]}],
             "inferenceConfig": {"maxTokens": 0}},
            "maxTokens",
        ),
    ],
)  # fmt: skip
def test_requests_converse_refuses_are_validation_exceptions(
    body: dict[str, Any], expected: str
) -> None:
    kind, message = refusal(body)
    assert kind == "ValidationException"
    assert expected in message


def test_with_thinking_on_a_signed_reasoning_block_opens_the_reply_and_must_come_back() -> None:
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    call = call_for(messages=[{"role": "user", "content": "Rome"}], tools=[WEATHER_TOOL],
                    extra_body=thinking)  # fmt: skip
    body = BedrockFormat().whole(call, reply_to(call), "r1")
    reasoning, use = body["output"]["message"]["content"]
    assert reasoning["reasoningContent"]["reasoningText"]["text"] == "The user asks: Rome"
    completion = parse_converse(body)
    assert completion.vendor_state == {"bedrock_reasoning": [reasoning]}

    _, final = read_stream(streamed(parse(converse_body(Request.model_validate(
        {"model": MODEL, "messages": [{"role": "user", "content": "Rome"}],
         "tools": [WEATHER_TOOL], "extra_body": thinking}
    )), "converse-stream")))  # fmt: skip
    assert final.vendor_state == {"bedrock_reasoning": [reasoning]}

    tampered = json.loads(json.dumps(reasoning))
    tampered["reasoningContent"]["reasoningText"]["text"] = "Something else"
    turn = {
        "messages": [
            {"role": "user", "content": [{"text": "Rome"}]},
            {"role": "assistant", "content": [tampered, use]},
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": use["toolUse"]["toolUseId"],
                                "content": [{"text": "sunny"}]}}]},
        ],
        "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather",
                                               "inputSchema": {"json": {}}}}]},
    }  # fmt: skip
    _, message = refusal(turn)
    assert "signature" in message


def test_errors_name_their_type_in_x_amzn_error_type() -> None:
    wire = BedrockFormat()
    throttled = wire.injected(Fault(status=429), 0)
    assert throttled.status == 429
    assert throttled.headers["x-amzn-ErrorType"].startswith("ThrottlingException:")
    quota = wire.injected(Fault(quota=True), 0)
    assert quota.status == 400
    assert quota.headers["x-amzn-ErrorType"].startswith("ServiceQuotaExceededException:")
    denied = wire.error(401, "no", retry_after_s=0)
    assert denied.status == 403
    assert denied.headers["x-amzn-ErrorType"].startswith("AccessDeniedException:")


def test_a_mid_stream_exception_breaks_the_stream_after_the_text_so_far() -> None:
    call = call_for(stream=True, messages=[{"role": "user", "content": "a b c d"}])
    stream = BedrockFormat().stream(call, reply_to(call), "r1")
    parser = ConverseStreamParser("bedrock")
    assert [d.text for d in parser.feed(stream.opening + stream.events[0])] == ["echo:"]
    with pytest.raises(StreamBroken, match="interrupted") as caught:
        parser.feed(stream.error)
    assert caught.value.retryable
    assert caught.value.partial is True
