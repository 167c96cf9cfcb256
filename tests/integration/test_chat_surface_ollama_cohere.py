"""Tools, JSON formats and images through a real worker against the stand-in, in Ollama's
`/api/chat` and Cohere's `/v2/chat` wire formats.

Over loopback, plain and streamed: a tool round trip (call -> tool result ->
final text), a strict json_schema reply parsed, an image request accepted (a
data URL). The stand-in's answers follow `producer/cli/tools/standin/chat_rules.py`.
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

KEY = "native-chat-test-0123456789abcdef"
# (vendor type, a model that sees images): both vendors' formats, on the stand-in.
VENDORS = {"ollama": "llava", "cohere": "command-a-vision-07-2025"}
BOTH = [pytest.param(vendor, stream, id=f"{vendor}-{'streamed' if stream else 'plain'}")
        for vendor in VENDORS for stream in (False, True)]  # fmt: skip


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    config = {
        "vendors": {
            name: {
                "type": name,
                "base_url": "{url}",
                "models": ["*"],
                "timeout_s": 5,
                "api_key": "${NATIVE_API_KEY}",
            }
            for name in VENDORS
        },
        "default_vendor": "ollama",
        "retry_policy": {"max_retries": 1, "backoff": "fixed", "initial_delay_s": 0.2},
    }
    with running_stack(tmp_path_factory.mktemp("native-chat")) as stack:
        stack.configure(config, NATIVE_API_KEY=KEY)
        with stack.environment():
            client = Client.from_env()
        stack.start_worker([f"llm.{name}" for name in VENDORS], concurrency=4)
        yield client


def ask(vendor: str, stream: bool, **fields: Any) -> dict[str, Any]:
    return {
        "model": VENDORS[vendor],
        "vendor": vendor,
        "allow_fallback": False,
        "stream": stream,
        **fields,
    }


@pytest.mark.parametrize(("vendor", "stream"), BOTH)
def test_a_tool_round_trip_calls_the_tool_then_answers_from_its_result(
    client: Client, vendor: str, stream: bool
) -> None:
    question = {"role": "user", "content": "Paris"}
    first = client.wait(
        client.submit(ask(vendor, stream, messages=[question], tools=[WEATHER_TOOL])),
        timeout_s=30,
    )
    assert first.vendor == vendor
    assert first.finish_reason is FinishReason.TOOL_CALLS
    (call,) = first.tool_calls
    assert call.name == "get_weather"
    assert call.parsed_arguments() == {"city": "Paris"}

    result = {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c":18}'}
    turn = [question, first.to_message(), result]
    second = client.wait(
        client.submit(ask(vendor, stream, messages=turn, tools=[WEATHER_TOOL])), timeout_s=30
    )
    assert second.content == 'echo: {"temp_c":18}'
    assert second.tool_calls == []
    assert second.finish_reason is FinishReason.STOP


@pytest.mark.parametrize(("vendor", "stream"), BOTH)
def test_a_strict_json_schema_reply_is_parsed(client: Client, vendor: str, stream: bool) -> None:
    prompt = "The city of light"
    request = ask(
        vendor,
        stream,
        messages=[{"role": "user", "content": prompt}],
        response_format=ANSWER_FORMAT,
    )
    reply = client.wait(client.submit(request), timeout_s=30)
    assert reply.parsed == {"city": prompt, "words": 4}
    assert json.loads(reply.content) == reply.parsed


@pytest.mark.parametrize(("vendor", "stream"), BOTH)
def test_an_image_request_is_accepted(client: Client, vendor: str, stream: bool) -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": PNG_URL}},
    ]
    request = Request.model_validate(
        ask(vendor, stream, messages=[{"role": "user", "content": parts}])
    )
    reply = client.wait(client.submit(request), timeout_s=30)
    assert reply.content == "echo: What is this? [1 image]"


def test_an_image_by_url_is_refused_for_ollama_naming_the_field(client: Client) -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/p.png"}},
    ]
    job_id = client.submit(ask("ollama", False, messages=[{"role": "user", "content": parts}]))
    with pytest.raises(InvalidRequest, match=r"messages\[0\]\.content\[1\]\.image_url\.url"):
        client.wait(job_id, timeout_s=30)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_cohere_keeps_its_tool_plan_and_a_named_choice_sends_only_that_tool(
    client: Client, stream: bool
) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    request = ask(
        "cohere",
        stream,
        messages=[{"role": "user", "content": "Rome"}],
        tools=[{"type": "function", "function": {"name": "get_time"}}, WEATHER_TOOL],
        tool_choice=choice,
    )
    reply = client.wait(client.submit(request), timeout_s=30)
    assert reply.finish_reason is FinishReason.TOOL_CALLS
    assert reply.vendor_finish_reason == "TOOL_CALL"
    assert [(c.name, c.parsed_arguments()) for c in reply.tool_calls] == [
        ("get_weather", {"city": "Rome"})
    ]
    assert reply.tool_calls[0].id.startswith("get_weather_")
    assert reply.vendor_state == {"cohere_tool_plan": "I will call get_weather."}
    assert reply.to_message().vendor_state == reply.vendor_state
