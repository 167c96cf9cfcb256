"""Capabilities: what a request needs beyond text, what each vendor serves, and routing by both."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from dispatcher.config.schema import Capability, VendorConfig
from dispatcher.config.settings import Settings
from dispatcher.errors import ConfigError, NoRoute
from dispatcher.models import Deployment, Request
from dispatcher.routing.capabilities import missing, needs, served
from dispatcher.routing.router import route
from producer import Client

IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
TOOL_NAME = "get_weather"
TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
}


def request(**overrides: Any) -> Request:
    fields: dict[str, Any] = {
        "model": "m-1",
        "messages": [{"role": "user", "content": "hi"}],
        **overrides,
    }
    return Request.model_validate(fields)


def with_image(**overrides: Any) -> Request:
    content = [{"type": "text", "text": "what is this?"}, IMAGE]
    return request(messages=[{"role": "user", "content": content}], **overrides)


def vendor(kind: str, **overrides: Any) -> VendorConfig:
    fields: dict[str, Any] = {"type": kind, "models": ["*"], **overrides}
    if kind in {"openai_compatible", "azure", "ollama"}:
        fields.setdefault("base_url", "http://127.0.0.1:9")
    return VendorConfig(**fields)


# --- what a request needs -----------------------------------------------------------------


def test_a_plain_text_chat_needs_nothing_more() -> None:
    assert needs(request()) == frozenset()
    assert needs(request(response_format={"type": "text"}, stream=True)) == frozenset()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"tools": [TOOL]}, {Capability.TOOLS}),
        ({"tools": [TOOL], "stream": True}, {Capability.TOOLS, Capability.STREAMED_TOOLS}),
        (
            {"tools": [TOOL], "tool_choice": "required"},
            {Capability.TOOLS, Capability.FORCED_TOOLS},
        ),
        (
            {
                "tools": [TOOL],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            },
            {Capability.TOOLS, Capability.FORCED_TOOLS},
        ),
        ({"tools": [TOOL], "tool_choice": "none"}, {Capability.TOOLS}),
        (
            {"tools": [TOOL], "parallel_tool_calls": False},
            {Capability.TOOLS, Capability.NO_PARALLEL_TOOLS},
        ),
        ({"tools": [TOOL], "parallel_tool_calls": True}, {Capability.TOOLS}),
        ({"response_format": {"type": "json_object"}}, {Capability.JSON_SCHEMA}),
        ({"response_format": SCHEMA_FORMAT}, {Capability.JSON_SCHEMA}),
    ],
)
def test_tools_streams_of_them_and_json_formats_are_needs(
    overrides: dict[str, Any], expected: set[Capability]
) -> None:
    if overrides.get("response_format", {}).get("type") == "json_object":
        overrides["messages"] = [{"role": "user", "content": "answer in json"}]
    assert needs(request(**overrides)) == expected


def test_an_image_in_any_message_needs_vision() -> None:
    assert needs(with_image()) == {Capability.VISION}


def test_a_conversation_holding_tool_turns_needs_tools_even_without_declared_tools() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    assert Capability.TOOLS in needs(request(messages=messages))


# --- what a vendor serves ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "model", "vision"),
    [
        ("openai", "gpt-4o", True),
        ("anthropic", "claude-sonnet-4-5", True),
        ("gemini", "gemini-2.5-flash", True),
        ("openai_compatible", "llama-3.1-8b", False),
        ("ollama", "llama3.1", False),
        ("ollama", "llava:13b", True),
        ("ollama", "llama3.2-vision", True),
        ("cohere", "command-a-03-2025", False),
        ("cohere", "command-a-vision-07-2025", True),
    ],
)
def test_the_built_in_table_gives_vision_only_to_models_that_see(
    kind: str, model: str, vision: bool
) -> None:
    got = served(vendor(kind), model)
    assert (Capability.VISION in got) is vision
    assert {Capability.TOOLS, Capability.JSON_SCHEMA} <= got


@pytest.mark.parametrize(
    ("kind", "forced", "one_at_a_time"),
    [
        ("openai", True, True),
        ("anthropic", True, True),
        ("gemini", True, False),
        ("cohere", True, False),
        ("ollama", False, False),
    ],
)
def test_forcing_a_call_or_one_call_per_reply_only_where_the_wire_format_can(
    kind: str, forced: bool, one_at_a_time: bool
) -> None:
    got = served(vendor(kind), "m")
    assert (Capability.FORCED_TOOLS in got) is forced
    assert (Capability.NO_PARALLEL_TOOLS in got) is one_at_a_time


def test_a_custom_vendor_type_serves_text_only_unless_configured() -> None:
    custom = VendorConfig(type="acme.vendors:Acme", base_url="http://127.0.0.1:9")
    assert served(custom, "anything") == frozenset()
    declared = VendorConfig(
        type="acme.vendors:Acme", base_url="http://127.0.0.1:9", capabilities=["tools"]
    )
    assert served(declared, "anything") == {Capability.TOOLS}


def test_configured_capabilities_override_the_table_exact_name_then_first_glob() -> None:
    configured = vendor(
        "openai_compatible",
        capabilities={
            "vl-7b": ["vision"],
            "vl-*": ["vision", "tools"],
            "*": ["json_schema"],
        },
    )
    assert served(configured, "vl-7b") == {Capability.VISION}
    assert served(configured, "vl-72b") == {Capability.VISION, Capability.TOOLS}
    assert served(configured, "text-1") == {Capability.JSON_SCHEMA}
    narrowed = vendor("openai", capabilities=["tools"])
    assert served(narrowed, "gpt-4o") == {Capability.TOOLS}


def test_missing_lists_what_is_lacking_in_a_stable_order() -> None:
    required = frozenset({Capability.STREAMED_TOOLS, Capability.VISION, Capability.TOOLS})
    assert missing(required, vendor("openai_compatible"), "m") == [Capability.VISION]
    assert missing(required, VendorConfig(type="x.y:Z"), "m") == [
        Capability.TOOLS,
        Capability.VISION,
        Capability.STREAMED_TOOLS,
    ]


def test_an_unknown_capability_in_the_configuration_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(vendors={"local": {"type": "ollama", "capabilities": ["tools", "smell"]}})
    assert str(caught.value).splitlines()[1:] == [
        "  vendors.local.capabilities.*[1]: must be 'tools', 'vision', 'json_schema', "
        "'streamed_tools', 'forced_tools' or 'no_parallel_tools'"
    ]


# --- routing -------------------------------------------------------------------------------


def test_an_image_request_is_refused_naming_vision_when_only_text_vendors_are_configured() -> None:
    settings = Settings(vendors={"local": vendor("ollama"), "vllm": vendor("openai_compatible")})
    with pytest.raises(NoRoute) as caught:
        route(with_image(), settings)

    assert caught.value.reasons == {
        "local": "cannot serve vision for model 'm-1'",
        "vllm": "cannot serve vision for model 'm-1'",
    }
    assert "vision" in str(caught.value)
    assert route(request(), settings).vendor in {"local", "vllm"}  # text still goes


def test_submit_refuses_an_image_naming_vision_and_writes_nothing() -> None:
    settings = Settings(vendors={"local": vendor("ollama", models=["llama3.1"])})
    redis = fakeredis.FakeRedis()
    request = {
        "model": "llama3.1",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, IMAGE]}],
    }
    with Client(settings, redis_client=redis) as client, pytest.raises(NoRoute) as caught:
        client.submit(request)

    assert str(caught.value) == (
        "no vendor can take model 'llama3.1': local: cannot serve vision for model 'llama3.1'"
    )
    assert redis.keys("*") == []


def test_a_request_goes_only_to_vendors_that_serve_what_it_needs_fallbacks_included() -> None:
    settings = Settings(
        vendors={
            "vllm": vendor("openai_compatible", priority=10),
            "oai": vendor("openai"),
            "local": vendor("ollama"),
        },
        model_groups={
            "m-1": [
                Deployment(vendor="vllm", model="m-1"),
                Deployment(vendor="local", model="llava:7b"),
                Deployment(vendor="oai", model="gpt-4o"),
            ]
        },
    )
    chosen = route(with_image(), settings)
    every = [chosen.vendor, *(d.vendor for d in chosen.fallbacks)]
    assert "vllm" not in every
    assert set(every) == {"local", "oai"}
