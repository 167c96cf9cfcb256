"""Our Gemini client against the stand-in's Gemini format, in process: tools, signatures, JSON, images.

The stand-in's Gemini side is written from the wire-format notes (§4), so this
checks that both read the same shapes: a call with its thought signature, the
result sent back under the call's name, a refused turn whose call lost its
signature, JSON by a schema, images, plain and streamed.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from dispatcher import FinishReason, InvalidRequest, Message, Request, Response, VendorConfig
from dispatcher.vendors.gemini import GeminiVendor
from producer.cli.tools.standin.gemini import GeminiFormat, thought_signature
from producer.cli.tools.standin.replies import Refused, reply_to

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
STREAMED = pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])


def standin(request: httpx.Request) -> httpx.Response:
    """The stand-in's Gemini format answering one request, as its server would."""
    target = request.url.path.rsplit("/", 1)[-1]
    fake = SimpleNamespace(match_info={"target": target}, query=dict(request.url.params))
    wire = GeminiFormat()
    try:
        call = wire.parse(fake, json.loads(request.content))  # type: ignore[arg-type]
    except Refused as refused:
        body = refused.response.body
        assert isinstance(body, bytes)
        return httpx.Response(refused.response.status, content=body)
    reply = reply_to(call)
    if not call.stream:
        return httpx.Response(200, json=wire.whole(call, reply, "rid1"))
    stream = wire.stream(call, reply, "rid1")
    data = stream.opening + b"".join(stream.events) + stream.closing
    return httpx.Response(200, content=data, headers={"content-type": "text/event-stream"})


@pytest.fixture
def gemini() -> GeminiVendor:
    client = httpx.AsyncClient(transport=httpx.MockTransport(standin))
    config = VendorConfig(type="gemini", api_key=SecretStr("AIza-test"), base_url="https://g")
    return GeminiVendor("gemini", config, client)


def ask(stream: bool, **fields: Any) -> Request:
    return Request.model_validate({"model": "gemini-3-pro", "stream": stream, **fields})


async def answer(vendor: GeminiVendor, request: Request) -> Response:
    if not request.stream:
        return await vendor.complete(request)
    text, final = [], None
    async for delta in vendor.stream(request):
        text.append(delta.text)
        if delta.finish_reason is not None:
            final = delta
    assert final is not None
    return Response(
        content="".join(text),
        tool_calls=list(final.tool_calls),
        vendor_state=final.vendor_state,
        model="gemini-3-pro",
        vendor="gemini",
        finish_reason=final.finish_reason,
    )


@STREAMED
async def test_a_tool_round_trip_hands_the_signature_back(
    gemini: GeminiVendor, stream: bool
) -> None:
    question = {"role": "user", "content": "Paris"}
    first = await answer(gemini, ask(stream, messages=[question], tools=[WEATHER]))
    assert first.finish_reason is FinishReason.TOOL_CALLS
    (call,) = first.tool_calls
    assert call.name == "get_weather"
    assert call.parsed_arguments() == {"city": "Paris"}
    signature = thought_signature("get_weather", {"city": "Paris"})
    assert first.vendor_state == {"gemini": {"signatures": {call.id: signature}}}

    result = {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c":18}'}
    turn = [question, first.to_message(), result]
    second = await answer(gemini, ask(stream, messages=turn, tools=[WEATHER]))
    assert second.content == 'echo: {"temp_c":18}'
    assert second.tool_calls == []
    assert second.finish_reason is FinishReason.STOP


@STREAMED
async def test_a_call_sent_back_without_its_signature_is_refused_as_gemini_3_does(
    gemini: GeminiVendor, stream: bool
) -> None:
    question = {"role": "user", "content": "Paris"}
    first = await answer(gemini, ask(False, messages=[question], tools=[WEATHER]))
    (call,) = first.tool_calls
    stripped = Message(role="assistant", tool_calls=[call])
    result = {"role": "tool", "tool_call_id": call.id, "content": "18"}
    with pytest.raises(InvalidRequest, match="missing a thought_signature") as caught:
        await answer(gemini, ask(stream, messages=[question, stripped, result], tools=[WEATHER]))
    assert caught.value.status_code == 400


async def test_an_old_turn_needs_no_signature_once_a_new_user_turn_starts(
    gemini: GeminiVendor,
) -> None:
    question = {"role": "user", "content": "Paris"}
    first = await answer(gemini, ask(False, messages=[question], tools=[WEATHER]))
    (call,) = first.tool_calls
    history = [
        question,
        Message(role="assistant", tool_calls=[call]),
        {"role": "tool", "tool_call_id": call.id, "content": "18"},
        {"role": "assistant", "content": "It is 18 degrees."},
        {"role": "user", "content": "Thanks"},
    ]
    reply = await gemini.complete(ask(False, messages=history))
    assert reply.content == "echo: Thanks"


@STREAMED
async def test_a_json_schema_reply_is_the_schemas_json(gemini: GeminiVendor, stream: bool) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "words": {"type": "integer"}},
        "required": ["city", "words"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}}
    prompt = "The city of light"
    reply = await answer(
        gemini, ask(stream, messages=[{"role": "user", "content": prompt}], response_format=fmt)
    )
    assert json.loads(reply.content) == {"city": prompt, "words": 4}


@STREAMED
async def test_an_image_is_counted(gemini: GeminiVendor, stream: bool) -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp"}},
    ]
    reply = await answer(gemini, ask(stream, messages=[{"role": "user", "content": parts}]))
    assert reply.content == "echo: What is this? [2 images]"


def _refusal(body: dict[str, Any]) -> dict[str, Any]:
    request = httpx.Request(
        "POST", "https://g/v1beta/models/gemini-3-pro:generateContent", json=body
    )
    response = standin(request)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    return dict(error)


def test_the_standin_refuses_as_gemini_does() -> None:
    user = {"role": "user", "parts": [{"text": "hi"}]}
    call = {
        "functionCall": {"name": "f", "args": {}},
        "thoughtSignature": thought_signature("f", {}),
    }
    declared = {"functionDeclarations": [{"name": "f"}]}
    assert (
        "allowed_function_names"
        in _refusal(
            {
                "contents": [user],
                "tools": [declared],
                "toolConfig": {
                    "functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["f"]}
                },
            }
        )["message"]
    )
    assert "number of function response parts" in _refusal(
        {"contents": [user, {"role": "model", "parts": [call, call]},
                      {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]}
    )["message"]  # fmt: skip
    assert (
        "Corrupted"
        in _refusal(
            {"contents": [user, {"role": "model", "parts": [{**call, "thoughtSignature": "eA=="}]}]}
        )["message"]
    )
    assert "Unsupported MIME type" in _refusal(
        {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/gif", "data": ""}}]}]}
    )["message"]  # fmt: skip
    both = {"responseMimeType": "application/json", "responseSchema": {}, "responseJsonSchema": {}}
    assert (
        "mutually exclusive" in _refusal({"contents": [user], "generationConfig": both})["message"]
    )
