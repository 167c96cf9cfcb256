"""Tools, JSON formats, images and thinking through a real worker against the stand-in,
in Anthropic's Messages wire format (`/v1/messages`).

Over loopback, plain and streamed: a tool round trip (call -> tool result ->
final text), the same with thinking on (its signed block must come back in
the next turn), a strict json_schema reply parsed (sent as
`output_config.format`), json_object by instruction, images by data URL and
by https URL accepted, and a seed refused. The stand-in's answers follow
`producer/cli/tools/standin/chat_rules.py`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher import FinishReason, InvalidRequest, Request
from producer import Client
from tests.chat_samples import ANSWER_FORMAT, PNG_URL, WEATHER_TOOL
from tests.integration.stack import running_stack

pytestmark = pytest.mark.integration

KEY = "sk-ant-api03-chat-test-0123456789abcdef"
MODEL = "claude-sonnet-4-5"
BOTH = pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
THINKING = {"thinking": {"type": "enabled", "budget_tokens": 1024}}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    config = {
        "vendors": {
            "anthropic": {
                "type": "anthropic",
                "base_url": "{url}",
                "models": ["claude-*"],
                "timeout_s": 5,
                "api_key": "${ANTHROPIC_API_KEY}",
            }
        },
        "default_vendor": "anthropic",
        "retry_policy": {"max_retries": 1, "backoff": "fixed", "initial_delay_s": 0.2},
    }
    with running_stack(tmp_path_factory.mktemp("anthropic-chat")) as stack:
        stack.configure(config, ANTHROPIC_API_KEY=KEY)
        with stack.environment():
            client = Client.from_env()
        stack.start_worker(["llm.anthropic"], concurrency=4)
        yield client


def ask(stream: bool, **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "vendor": "anthropic", "allow_fallback": False, "stream": stream,
            **fields}  # fmt: skip


@BOTH
def test_a_tool_round_trip_calls_the_tool_then_answers_from_its_result(
    client: Client, stream: bool
) -> None:
    question = {"role": "user", "content": "Paris"}
    first = client.wait(
        client.submit(ask(stream, messages=[question], tools=[WEATHER_TOOL])), timeout_s=30
    )
    assert first.vendor == "anthropic"
    assert first.finish_reason is FinishReason.TOOL_CALLS
    assert first.vendor_finish_reason == "tool_use"
    (call,) = first.tool_calls
    assert call.id.startswith("toolu_")
    assert call.name == "get_weather"
    assert call.parsed_arguments() == {"city": "Paris"}

    # The stand-in refuses a tool_result that answers no tool_use of the message before.
    result = {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c":18}'}
    turn = [question, first.to_message(), result]
    second = client.wait(
        client.submit(ask(stream, messages=turn, tools=[WEATHER_TOOL])), timeout_s=30
    )
    assert second.content == 'echo: {"temp_c":18}'
    assert second.tool_calls == []
    assert second.finish_reason is FinishReason.STOP


@BOTH
def test_with_thinking_on_the_signed_thinking_block_survives_the_tool_round_trip(
    client: Client, stream: bool
) -> None:
    question = {"role": "user", "content": "Rome"}
    first = client.wait(
        client.submit(ask(stream, messages=[question], tools=[WEATHER_TOOL], extra_body=THINKING)),
        timeout_s=30,
    )
    assert first.finish_reason is FinishReason.TOOL_CALLS
    assert first.vendor_state is not None
    (block,) = first.vendor_state["anthropic_thinking"]  # type: ignore[misc]
    assert block["type"] == "thinking"  # type: ignore[index,call-overload]
    assert block["thinking"] == "The user asks: Rome"  # type: ignore[index,call-overload]

    (call,) = first.tool_calls
    result = {"role": "tool", "tool_call_id": call.id, "content": "sunny"}
    turn = [question, first.to_message(), result]
    second = client.wait(
        client.submit(ask(stream, messages=turn, tools=[WEATHER_TOOL], extra_body=THINKING)),
        timeout_s=30,
    )
    assert second.content == "echo: sunny"

    # Without the thinking block the stand-in answers as Anthropic does: a 400.
    bare = first.to_message().model_copy(update={"vendor_state": None})
    job_id = client.submit(
        ask(stream, messages=[question, bare, result], tools=[WEATHER_TOOL], extra_body=THINKING)
    )
    with pytest.raises(InvalidRequest, match="Expected `thinking` or `redacted_thinking`"):
        client.wait(job_id, timeout_s=30)


@BOTH
def test_a_named_tool_choice_is_a_forced_tool_use(client: Client, stream: bool) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    request = ask(
        stream,
        messages=[{"role": "user", "content": "Oslo"}],
        tools=[{"type": "function", "function": {"name": "get_time"}}, WEATHER_TOOL],
        tool_choice=choice,
        parallel_tool_calls=False,
    )
    reply = client.wait(client.submit(request), timeout_s=30)
    assert reply.finish_reason is FinishReason.TOOL_CALLS
    assert [(c.name, c.parsed_arguments()) for c in reply.tool_calls] == [
        ("get_weather", {"city": "Oslo"})
    ]


@BOTH
def test_a_strict_json_schema_reply_is_parsed(client: Client, stream: bool) -> None:
    prompt = "The city of light"
    request = ask(
        stream, messages=[{"role": "user", "content": prompt}], response_format=ANSWER_FORMAT
    )
    reply = client.wait(client.submit(request), timeout_s=30)
    assert reply.parsed == {"city": prompt, "words": 4}
    assert json.loads(reply.content) == reply.parsed


@BOTH
def test_json_object_is_asked_for_by_instruction_and_parsed(client: Client, stream: bool) -> None:
    request = ask(
        stream,
        messages=[{"role": "user", "content": "Hello there"}],
        response_format={"type": "json_object"},
    )
    reply = client.wait(client.submit(request), timeout_s=30)
    assert reply.parsed == {"echo": "Hello there"}


@BOTH
def test_an_image_request_is_accepted(client: Client, stream: bool) -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": PNG_URL}},
        {"type": "image_url", "image_url": {"url": "https://example.com/p.jpg", "detail": "low"}},
    ]
    request = Request.model_validate(ask(stream, messages=[{"role": "user", "content": parts}]))
    reply = client.wait(client.submit(request), timeout_s=30)
    assert reply.content == "echo: What is this? [2 images]"


def test_a_seed_is_refused_naming_the_field(client: Client) -> None:
    job_id = client.submit(ask(False, messages=[{"role": "user", "content": "hi"}], seed=7))
    with pytest.raises(InvalidRequest, match="seed: Anthropic has no repeatable sampling"):
        client.wait(job_id, timeout_s=30)
