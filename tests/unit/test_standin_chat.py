"""The stand-in's deterministic tool, JSON and image answers, and the refusals it copies."""

from __future__ import annotations

from typing import Any

import pytest

from producer.cli.tools.standin.chat_rules import (
    ChatAsk,
    argument_value,
    planned_call,
    planned_text,
)
from producer.cli.tools.standin.openai import parse_chat
from producer.cli.tools.standin.replies import Refused, reply_to

WEATHER = ("get_weather", {"type": "object", "properties": {"city": {"type": "string"}}})


def test_argument_values_follow_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "temp": {"type": ["null", "number"]},
            "metric": {"type": "boolean"},
            "tags": {"type": "array"},
            "unit": {"enum": ["c", "f"]},
            "where": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
    }
    assert argument_value(schema, "two words") == {
        "city": "two words",
        "days": 2,
        "temp": 2,
        "metric": True,
        "tags": [],
        "unit": "c",
        "where": {"name": "two words"},
    }


def test_a_call_goes_to_the_first_tool_or_the_named_one_and_none_means_text() -> None:
    other = ("get_time", {})
    ask = ChatAsk(tools=(other, WEATHER), prompt="Paris")
    first = planned_call(ask)
    assert first is not None
    assert (first.name, first.arguments) == ("get_time", "{}")
    named = planned_call(ChatAsk(tools=(other, WEATHER), tool_choice="get_weather", prompt="Paris"))
    assert named is not None
    assert (named.name, named.arguments) == ("get_weather", '{"city":"Paris"}')
    assert (
        named.id
        == planned_call(ChatAsk(tools=(WEATHER,), tool_choice="get_weather", prompt="Paris")).id
    )  # type: ignore[union-attr]
    assert planned_call(ChatAsk(tools=(WEATHER,), tool_choice="none", prompt="Paris")) is None


def test_tool_results_json_formats_and_images_shape_the_text() -> None:
    assert planned_text(ChatAsk(last_role="tool", last_text="18")) == "echo: 18"
    assert planned_text(ChatAsk(json_object=True, prompt="hi json")) == '{"echo":"hi json"}'
    assert planned_text(ChatAsk(prompt="What?", images=2)) == "echo: What? [2 images]"


def chat(**body: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "Paris"}], **body}


def test_the_stand_in_answers_a_tools_request_with_a_call() -> None:
    call = parse_chat(
        chat(
            tools=[
                {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER[1]}}
            ]
        )
    )
    reply = reply_to(call)
    assert reply.tool_call is not None
    assert reply.tool_call.arguments == '{"city":"Paris"}'
    assert reply.text == ""


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "tool", "tool_call_id": "c", "content": "1"},
                ]
            },
            "messages.[1].role",
        ),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "messages"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "file:///x"}}],
                    }
                ]
            },
            "messages.[0].content",
        ),
    ],
)
def test_the_stand_in_refuses_what_the_api_refuses(body: dict[str, Any], param: str) -> None:
    with pytest.raises(Refused) as refused:
        parse_chat(chat(**body))
    assert refused.value.response.status == 400
    assert f'"param": "{param}"' in refused.value.response.text
