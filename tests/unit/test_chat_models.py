"""Messages with parts, tool calls and tool results; tools, tool choice and response formats.

Every refusal names the field at fault, as `producer.checks.validated` reports it.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from dispatcher import (
    InvalidRequest,
    InvalidVendorOutput,
    Message,
    Request,
    Response,
    Role,
    ToolCall,
)
from dispatcher.models import RESERVED_BODY_FIELDS
from producer.checks import validated
from tests.chat_samples import CALL, PNG, PNG_URL, TOOL_TURN, WEATHER_TOOL


def problems(request: dict[str, Any]) -> list[str]:
    """The problem lines `validated` reports for `request`."""
    with pytest.raises(InvalidRequest) as caught:
        validated(request)
    return [line.strip() for line in str(caught.value).splitlines()[1:]]


def plain(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": list(messages), **fields}


USER = {"role": "user", "content": "Weather in Paris?"}


def test_the_documented_request_with_every_new_field_is_accepted() -> None:
    request = validated(TOOL_TURN)
    user, assistant, tool = request.messages
    assert isinstance(user.content, list)
    assert user.image_count == 2
    assert user.text == "What is in this photo, and what is the weather there?"
    assert assistant.content is None
    assert assistant.tool_calls == [ToolCall.model_validate(CALL)]
    assert (tool.role, tool.tool_call_id, tool.text) == (Role.TOOL, "call_a1", '{"temp_c":18}')
    assert request.tools is not None
    assert request.tools[0].function.strict is True
    assert (request.tool_choice, request.parallel_tool_calls, request.seed) == ("auto", True, 7)


def test_plain_string_content_is_still_just_a_string() -> None:
    message = Message(role="user", content="Hi")
    assert (message.content, message.text, message.image_count) == ("Hi", "Hi", 0)
    assert message.model_dump(exclude_defaults=True) == {"role": Role.USER, "content": "Hi"}


def test_a_tool_message_answering_no_earlier_call_is_named() -> None:
    late = {"role": "tool", "tool_call_id": "call_zz", "content": "18"}
    assert problems(plain(USER, late)) == [
        "messages[1].tool_call_id: 'call_zz' answers no tool call of an earlier assistant message"
    ]


def test_a_tool_message_before_its_call_answers_nothing() -> None:
    early = {"role": "tool", "tool_call_id": "call_a1", "content": "18"}
    asked = {"role": "assistant", "tool_calls": [CALL]}
    assert problems(plain(USER, early, asked)) == [
        "messages[1].tool_call_id: 'call_a1' answers no tool call of an earlier assistant message"
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://example.com/a.png", "an image URL must be https://host/..."),
        ("ftp://example.com/a.png", "an image URL must be https://host/..."),
        ("https:///a.png", "an image URL must be https://host/..."),
        ("data:text/plain;base64,aGk=", "media type 'text/plain' is not an image type"),
        ("data:image/svg+xml;base64,PHN2Zz4=", "media type 'image/svg+xml' is not an image type"),
        ("data:image/png,rawbytes", "a data URL must read data:image/<type>;base64,<data>"),
        ("data:image/png;base64,@@@", "the data URL's data is not valid base64"),
        ("data:image/png;base64," + base64.b64encode(b"hello").decode(), "are not a image/png"),
        ("data:image/jpeg;base64," + base64.b64encode(PNG).decode(), "are not a image/jpeg"),
    ],
)
def test_an_image_that_is_not_an_image_is_named(url: str, problem: str) -> None:
    image = {"type": "image_url", "image_url": {"url": url}}
    message = {"role": "user", "content": [{"type": "text", "text": "What is it?"}, image]}
    (line,) = problems(plain(message))
    assert line.startswith("messages[0].content[1].image_url.url: ")
    assert problem in line


def test_https_and_data_url_images_are_accepted_with_a_detail() -> None:
    parts = [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "high"}},
    ]
    assert validated(plain({"role": "user", "content": parts})).messages[0].image_count == 2


def test_an_unknown_part_type_is_named() -> None:
    message = {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
    (line,) = problems(plain(message))
    assert line.startswith("messages[0].content[0]: ")
    assert "'input_audio'" in line
    assert "'text', 'image_url'" in line


def test_an_unknown_field_of_a_part_is_named_with_the_accepted_ones() -> None:
    message = {"role": "user", "content": [{"type": "text", "text": "hi", "cache": True}]}
    assert problems(plain(message)) == [
        "messages[0].content[0].cache: unknown field 'cache' for TextPart; accepted fields: "
        "text, type"
    ]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"role": "user"}, "messages[0].content: is required unless an assistant message"),
        ({"role": "user", "content": []}, "messages[0].content: a list of parts must hold"),
        ({"role": "user", "content": ""}, "messages[0].content: String should have at least 1"),
        ({"role": "tool", "content": "x"}, "messages[0].tool_call_id: is required in a tool"),
        (
            {"role": "user", "content": "x", "tool_calls": [CALL]},
            "messages[0].tool_calls: only assistant messages carry tool calls",
        ),
        (
            {"role": "user", "content": "x", "tool_call_id": "call_a1"},
            "messages[0].tool_call_id: only tool messages answer a tool call",
        ),
        (
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": PNG_URL}}]},
            "messages[0].content: only user messages may hold images",
        ),
        (
            {"role": "assistant", "content": None, "tool_calls": []},
            "messages[0].content: is required unless an assistant message has tool_calls",
        ),
        (
            {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "get weather"}}]},
            "messages[0].tool_calls[0].function.name: String should match pattern",
        ),
    ],
)
def test_fields_that_do_not_fit_the_role_are_named(message: dict[str, Any], expected: str) -> None:
    assert any(line.startswith(expected) for line in problems(plain(message))), expected


def test_a_tool_result_holds_text_only() -> None:
    asked = {"role": "assistant", "tool_calls": [CALL]}
    image = {"type": "image_url", "image_url": {"url": PNG_URL}}
    result = {"role": "tool", "tool_call_id": "call_a1", "content": [image]}
    assert problems(plain(USER, asked, result)) == [
        "messages[2].content: a tool message holds text only, not images"
    ]


def test_a_tool_choice_naming_no_declared_tool_is_named() -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}
    assert problems(plain(USER, tools=[WEATHER_TOOL], tool_choice=choice)) == [
        "tool_choice.function.name: 'get_time' is not a declared tool (declared: get_weather)"
    ]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"tool_choice": "sometimes"}, "tool_choice: must be 'auto', 'none' or 'required'"),
        ({"tool_choice": "required"}, "tool_choice: needs tools to choose from"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls: needs tools"),
        ({"tools": []}, "tools: must declare at least one tool, or be left out"),
        ({"tools": [WEATHER_TOOL, WEATHER_TOOL]}, "tools: declares 'get_weather' more than once"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
            "tools[0].function.parameters: not a valid JSON Schema at type",
        ),
        (
            {"response_format": {"type": "xml"}},
            "response_format: Input tag 'xml' found using 'type' does not match",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "a b", "schema": {}},
                }
            },
            "response_format.json_schema.name: String should match pattern",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a"}}},
            "response_format.json_schema.schema: is required",
        ),
        ({"seed": "7"}, "seed: must be a valid integer"),
    ],
)
def test_tool_and_format_fields_are_checked_by_name(fields: dict[str, Any], expected: str) -> None:
    assert any(line.startswith(expected) for line in problems(plain(USER, **fields))), expected


def test_a_named_tool_choice_and_none_are_accepted() -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    assert validated(plain(USER, tools=[WEATHER_TOOL], tool_choice=choice)).tool_choice
    assert validated(plain(USER, tool_choice="none")).tool_choice == "none"


@pytest.mark.parametrize(
    "field", ["tools", "tool_choice", "parallel_tool_calls", "response_format", "seed"]
)
def test_extra_body_may_not_set_a_field_we_now_model(field: str) -> None:
    assert field in RESERVED_BODY_FIELDS
    (line,) = problems(plain(USER, extra_body={field: None}))
    assert line.startswith(f"extra_body: may not set {field!r}")


def test_the_json_schema_is_read_and_written_as_schema() -> None:
    request = validated(TOOL_TURN)
    assert request.response_format is not None
    dumped = request.model_dump(mode="json")["response_format"]
    assert dumped["json_schema"]["schema"] == TOOL_TURN["response_format"]["json_schema"]["schema"]
    assert Request.model_validate_json(request.model_dump_json()) == request


def test_a_reply_becomes_the_next_turns_assistant_message() -> None:
    reply = Response(
        content="",
        tool_calls=[ToolCall.model_validate(CALL)],
        vendor_state={"signature": "abc"},
        model="gpt-4o",
        vendor="openai",
    )
    turn = reply.to_message()
    assert (turn.role, turn.content, turn.vendor_state) == (
        Role.ASSISTANT,
        None,
        {"signature": "abc"},
    )
    following = [
        USER,
        turn.model_dump(),
        {"role": "tool", "tool_call_id": "call_a1", "content": "18"},
    ]
    assert len(validated(plain(*following)).messages) == 3


def test_a_tool_calls_arguments_parse_on_demand() -> None:
    call = ToolCall.model_validate(CALL)
    assert (call.name, call.arguments) == ("get_weather", '{"city":"Paris"}')
    assert call.parsed_arguments() == {"city": "Paris"}
    assert ToolCall(id="c", function={"name": "f", "arguments": ""}).parsed_arguments() == {}
    broken = ToolCall(id="c", function={"name": "f", "arguments": '{"city": "Par'})
    with pytest.raises(InvalidVendorOutput) as caught:
        broken.parsed_arguments()
    assert caught.value.raw_text == '{"city": "Par'
    assert not caught.value.retryable


def test_every_problem_of_a_request_is_listed_together() -> None:
    bad = copy.deepcopy(TOOL_TURN)
    bad["messages"][0]["content"][1]["image_url"]["url"] = "http://example.com/p.jpg"
    bad["messages"][0]["content"].append({"type": "video"})
    bad["response_format"]["json_schema"]["name"] = "has space"
    assert len(problems(bad)) == 3
