"""Bedrock Converse over a mock transport: exact requests, replies, errors, auth and endpoints."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from dispatcher import (
    ConfigError,
    FinishReason,
    InvalidRequest,
    Message,
    Request,
    Usage,
    VendorAuthError,
    VendorConfig,
    VendorRateLimited,
    VendorTimeout,
    VendorUnavailable,
)
from dispatcher.models import ToolCall
from dispatcher.redaction import redact
from dispatcher.routing.capabilities import Capability, served
from dispatcher.vendors import bedrock_auth
from dispatcher.vendors.bedrock import BedrockVendor, parse_converse
from dispatcher.vendors.registry import build_vendor
from tests.unit.vendors.conftest import Recorder, json_response

# Shaped like a Bedrock API key (base64 behind "ABSK"), matched by no generic pattern.
KEY = "ABSKQmVkcm9ja0FQSUtleS1hYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3OA=="
REGION = "eu-west-3"
BASE = f"https://bedrock-runtime.{REGION}.amazonaws.com"
MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
MODEL_IN_URL = "anthropic.claude-sonnet-4-5-20250929-v1%3A0"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        "strict": True,
    },
}
# The notes' section 7.2 reply, with 7.8's cache counts and a reasoning block.
REASONING = {"reasoningContent": {"reasoningText": {"text": "Two cities.", "signature": "sig=="}}}
TOOL_REPLY = {
    "output": {
        "message": {
            "role": "assistant",
            "content": [
                REASONING,
                {"text": "Let me check."},
                {
                    "toolUse": {
                        "toolUseId": "tooluse_kR2xQe",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                },
                {
                    "toolUse": {
                        "toolUseId": "tooluse_P9qaLm",
                        "name": "get_weather",
                        "input": {"city": "Rome"},
                    }
                },
            ],
        }
    },
    "stopReason": "tool_use",
    "usage": {
        "inputTokens": 120,
        "outputTokens": 300,
        "totalTokens": 2468,
        "cacheReadInputTokens": 2048,
        "cacheWriteInputTokens": 0,
        "cacheDetails": [{"ttl": "5m", "inputTokens": 0}],
    },
    "metrics": {"latencyMs": 812},
}
REPLY = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Hi"}, {"text": " there"}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 9, "outputTokens": 3, "totalTokens": 12},
    "metrics": {"latencyMs": 210},
}


def vendor(recorder: Recorder, **config: Any) -> BedrockVendor:
    settings = {"type": "bedrock", "api_key": SecretStr(KEY), "region": REGION, **config}
    return BedrockVendor("bedrock", VendorConfig(**settings), recorder.client(), env={})


def ask(make_request: Callable[..., Request], **overrides: Any) -> Request:
    return make_request(model=MODEL, **overrides)


async def test_complete_sends_the_exact_request(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    request = ask(
        make_request,
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content="Hi"),
            Message(role="assistant", content="Hello!"),
            Message(role="user", content="How are you?"),
        ],
        temperature=0.2,
        top_p=0.9,
        max_tokens=256,
        stop=["###"],
        user="u-1",
        extra_body={"top_k": 40},
    )
    await vendor(rec, headers={"X-Client-Name": "dispatcher"}).complete(request)
    sent = rec.last
    assert sent.method == "POST"
    assert str(sent.url) == f"{BASE}/model/{MODEL_IN_URL}/converse"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["x-client-name"] == "dispatcher"
    assert rec.last_json() == {
        "messages": [
            {"role": "user", "content": [{"text": "Hi"}]},
            {"role": "assistant", "content": [{"text": "Hello!"}]},
            {"role": "user", "content": [{"text": "How are you?"}]},
        ],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {
            "maxTokens": 256,
            "temperature": 0.2,
            "topP": 0.9,
            "stopSequences": ["###"],
        },
        "additionalModelRequestFields": {"top_k": 40},
    }


async def test_a_plain_reply_is_parsed_with_its_usage(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(
        json_response(200, REPLY, headers={"x-amzn-RequestId": "5d3c0a4e-0000-4000-8000-1"})
    )
    reply = await vendor(rec).complete(ask(make_request))
    assert rec.last_json() == {"messages": [{"role": "user", "content": [{"text": "Say hello."}]}]}
    assert reply.content == "Hi there"
    assert reply.finish_reason is FinishReason.STOP
    assert reply.vendor_finish_reason == "end_turn"
    assert reply.usage == Usage(prompt_tokens=9, completion_tokens=3, total_tokens=12)
    assert reply.model == MODEL
    assert reply.vendor_request_id == "5d3c0a4e-0000-4000-8000-1"
    assert reply.vendor_state is None


async def test_a_tool_reply_gives_calls_cache_usage_and_reasoning_state(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    reply = await vendor(recorder(json_response(200, TOOL_REPLY))).complete(ask(make_request))
    assert reply.content == "Let me check."
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("tooluse_kR2xQe", "get_weather", '{"city":"Paris"}'),
        ("tooluse_P9qaLm", "get_weather", '{"city":"Rome"}'),
    ]
    assert reply.finish_reason is FinishReason.TOOL_CALLS
    # inputTokens leaves the cache out: the prompt is input + cache reads + writes.
    assert reply.usage == Usage(
        prompt_tokens=2168, completion_tokens=300, total_tokens=2468, cached_prompt_tokens=2048
    )
    assert reply.vendor_state == {"bedrock_reasoning": [REASONING]}


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", FinishReason.STOP),
        ("stop_sequence", FinishReason.STOP),
        ("max_tokens", FinishReason.LENGTH),
        ("model_context_window_exceeded", FinishReason.LENGTH),
        ("guardrail_intervened", FinishReason.CONTENT_FILTER),
        ("content_filtered", FinishReason.CONTENT_FILTER),
        ("malformed_model_output", FinishReason.ERROR),
        ("malformed_tool_use", FinishReason.ERROR),
        ("something_new", FinishReason.ERROR),
    ],
)
def test_stop_reasons_map_to_our_finish_reasons(stop_reason: str, expected: FinishReason) -> None:
    assert parse_converse({**REPLY, "stopReason": stop_reason}).finish_reason is expected


async def test_tools_history_images_and_reasoning_go_out_as_converse_blocks(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    calls = [
        ToolCall(
            id="tooluse_kR2xQe", function={"name": "get_weather", "arguments": '{"city":"Paris"}'}
        ),
        ToolCall(
            id="tooluse_P9qaLm", function={"name": "get_weather", "arguments": '{"city":"Rome"}'}
        ),
    ]
    request = Request.model_validate(
        {
            "model": MODEL,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Weather where this was taken?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    ],
                },
                Message(
                    role="assistant",
                    content="Let me check.",
                    tool_calls=calls,
                    vendor_state={"bedrock_reasoning": [REASONING]},
                ),
                {"role": "tool", "tool_call_id": "tooluse_kR2xQe", "content": '{"temp_c":18}'},
                {"role": "tool", "tool_call_id": "tooluse_P9qaLm", "content": "lookup failed"},
                {"role": "user", "content": "And tomorrow?"},
            ],
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        }
    )
    await vendor(rec).complete(request)
    assert rec.last_json() == {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "Weather where this was taken?"},
                    {"image": {"format": "png", "source": {"bytes": PNG}}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    REASONING,
                    {"text": "Let me check."},
                    {
                        "toolUse": {
                            "toolUseId": "tooluse_kR2xQe",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        }
                    },
                    {
                        "toolUse": {
                            "toolUseId": "tooluse_P9qaLm",
                            "name": "get_weather",
                            "input": {"city": "Rome"},
                        }
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "toolResult": {
                            "toolUseId": "tooluse_kR2xQe",
                            "content": [{"json": {"temp_c": 18}}],
                            "status": "success",
                        }
                    },
                    {
                        "toolResult": {
                            "toolUseId": "tooluse_P9qaLm",
                            "content": [{"text": "lookup failed"}],
                            "status": "success",
                        }
                    },
                    {"text": "And tomorrow?"},
                ],
            },
        ],
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "get_weather",
                        "description": "Current weather for a city",
                        "inputSchema": {"json": WEATHER["function"]["parameters"]},  # type: ignore[index]
                        "strict": True,
                    }
                }
            ],
            "toolChoice": {"tool": {"name": "get_weather"}},
        },
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        (None, None),
    ],
)
async def test_tool_choice_is_auto_any_or_left_out(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    choice: str | None,
    expected: dict[str, Any] | None,
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec).complete(ask(make_request, tools=[WEATHER], tool_choice=choice))
    config = rec.last_json()["toolConfig"]
    assert config.get("toolChoice") == expected
    assert [t["toolSpec"]["name"] for t in config["tools"]] == ["get_weather"]


async def test_tool_choice_none_sends_no_tools(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec).complete(ask(make_request, tools=[WEATHER], tool_choice="none"))
    assert "toolConfig" not in rec.last_json()


async def test_a_json_schema_format_is_output_config_with_the_schema_as_a_string(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "description": "Final answer", "schema": schema},
    }
    await vendor(rec).complete(ask(make_request, response_format=fmt))
    assert rec.last_json()["outputConfig"] == {
        "textFormat": {
            "type": "json_schema",
            "structure": {
                "jsonSchema": {
                    "schema": '{"type":"object","properties":{"city":{"type":"string"}},'
                    '"required":["city"],"additionalProperties":false}',
                    "name": "answer",
                    "description": "Final answer",
                }
            },
        }
    }


async def test_json_object_is_an_instruction_in_the_system_prompt(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec).complete(ask(make_request, response_format={"type": "json_object"}))
    (instruction,) = rec.last_json()["system"]
    assert "JSON" in instruction["text"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"seed": 7}, "seed"),
        ({"tools": [WEATHER], "parallel_tool_calls": False}, "parallel_tool_calls"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://example.com/p.png"}}
                        ],
                    }
                ]
            },
            "messages[0].content[0].image_url",
        ),
    ],
)
async def test_what_converse_cannot_take_is_refused_naming_the_field(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    overrides: dict[str, Any],
    field: str,
) -> None:
    rec = recorder(json_response(200, REPLY))
    request = Request.model_validate(
        {"model": MODEL, **ask(make_request).model_dump(), **overrides}
    )
    with pytest.raises(
        InvalidRequest, match=field.replace("[", r"\[").replace("]", r"\]")
    ) as caught:
        await vendor(rec).complete(request)
    assert caught.value.vendor == "bedrock"
    assert rec.requests == []


# --- errors -------------------------------------------------------------------


def _error(status: int, kind: str, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={"message": message},
        headers={
            "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            **headers,
        },
    )


THROTTLED = _error(
    429,
    "ThrottlingException",
    "Too many requests, please wait before trying again.",
    **{"Retry-After": "3"},
)
ERRORS = [
    pytest.param(_error(400, "ValidationException", "The model returned the following errors: max_tokens: range: 1..64000"), InvalidRequest, id="validation"),
    pytest.param(THROTTLED, VendorRateLimited, id="throttling"),
    pytest.param(_error(400, "ServiceQuotaExceededException", "Your request exceeds the service quota for your account."), VendorRateLimited, id="quota"),
    pytest.param(_error(503, "ServiceUnavailableException", "Bedrock is unable to process your request."), VendorUnavailable, id="unavailable"),
    pytest.param(_error(429, "ModelNotReadyException", "Model is not ready to serve inference requests."), VendorUnavailable, id="not-ready"),
    pytest.param(_error(500, "InternalServerException", "The server encountered an internal error."), VendorUnavailable, id="internal"),
    pytest.param(_error(424, "ModelErrorException", "The model failed to process the request."), VendorUnavailable, id="model-error"),
    pytest.param(_error(408, "ModelTimeoutException", "Model has timed out in processing the request."), VendorTimeout, id="model-timeout"),
    pytest.param(_error(403, "AccessDeniedException", "You don't have access to the model with the specified model ID."), VendorAuthError, id="access-denied"),
    pytest.param(_error(403, "UnrecognizedClientException", f"The security token included in the request is invalid: {KEY}"), VendorAuthError, id="unrecognized"),
    pytest.param(_error(404, "ResourceNotFoundException", "Could not resolve the foundation model from the provided model identifier."), InvalidRequest, id="not-found"),
    pytest.param(httpx.Response(400, json={"__type": "com.amazon.coral.validate#ValidationException", "message": "Malformed input request"}), InvalidRequest, id="body-type"),
    pytest.param(httpx.Response(502, text="<html>Bad gateway</html>"), VendorUnavailable, id="502"),
]  # fmt: skip


async def test_throttling_honours_retry_after_and_says_what_it_was(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    with pytest.raises(VendorRateLimited) as caught:
        await vendor(recorder(THROTTLED)).complete(ask(make_request))
    assert caught.value.retry_after_s == 3.0
    assert "ThrottlingException" in str(caught.value)


async def test_a_validation_error_keeps_the_vendor_message_and_is_final(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    with pytest.raises(InvalidRequest, match=r"max_tokens: range: 1\.\.64000") as caught:
        await vendor(recorder(ERRORS[0].values[0])).complete(ask(make_request))
    assert caught.value.retryable is False


async def test_a_missing_model_says_so(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    response = next(p.values[0] for p in ERRORS if p.id == "not-found")
    with pytest.raises(InvalidRequest, match="model is not found"):
        await vendor(recorder(response)).complete(ask(make_request))


# --- endpoints, regions and auth ------------------------------------------------


def _build(env: dict[str, str], **config: Any) -> BedrockVendor:
    return BedrockVendor("bedrock", VendorConfig(type="bedrock", **config), env=env)


def test_the_region_comes_from_the_config_then_aws_region_then_aws_default_region() -> None:
    key = {"api_key": SecretStr(KEY)}
    assert _build({"AWS_REGION": "us-west-2"}, region="eu-central-1", **key).base_url == (
        "https://bedrock-runtime.eu-central-1.amazonaws.com"
    )
    env = {"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "ap-south-1"}
    assert _build(env, **key).region == "us-west-2"
    assert _build({"AWS_DEFAULT_REGION": "ap-south-1"}, **key).region == "ap-south-1"


def test_base_url_then_the_endpoint_variable_override_the_regional_endpoint() -> None:
    key = {"api_key": SecretStr(KEY), "region": REGION}
    env = {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": "http://127.0.0.1:8900/"}
    assert _build(env, **key).base_url == "http://127.0.0.1:8900"
    assert _build(env, base_url="https://vpce.example.com", **key).base_url == (
        "https://vpce.example.com"
    )


def test_no_region_and_no_endpoint_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"vendors\.bedrock\.region"):
        _build({}, api_key=SecretStr(KEY))


async def test_the_bearer_token_variable_is_a_bedrock_api_key(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    config = VendorConfig(type="bedrock", region=REGION)
    built = BedrockVendor("b", config, rec.client(), env={"AWS_BEARER_TOKEN_BEDROCK": KEY})
    await built.complete(ask(make_request))
    assert rec.last.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in redact(f"echoed: Bearer {KEY}")  # registered with the redactor


def test_without_a_key_or_botocore_the_build_fails_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = bedrock_auth.importlib.import_module

    def no_botocore(name: str, package: str | None = None) -> Any:
        if name.startswith("botocore"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, package)

    monkeypatch.setattr(bedrock_auth.importlib, "import_module", no_botocore)
    # (Only the extra's name: a test that registers "dispatcher" as a header secret masks it.)
    with pytest.raises(ConfigError, match=r"botocore: pip install '.*\[bedrock\]'"):
        _build({}, region=REGION)


def test_the_registry_builds_bedrock_vendors() -> None:
    built = build_vendor("aws", VendorConfig(type="bedrock", region=REGION, api_key=SecretStr(KEY)))
    assert isinstance(built, BedrockVendor)


def test_a_streamed_call_posts_the_same_body_to_converse_stream(
    make_request: Callable[..., Request],
) -> None:
    built = _build({}, region=REGION, api_key=SecretStr(KEY))
    sent = built.build_request(ask(make_request), MODEL, stream=True)
    assert str(sent.url) == f"{BASE}/model/{MODEL_IN_URL}/converse-stream"
    assert "accept" not in sent.headers  # as AWS's SDKs: the action says what comes back
    assert json.loads(sent.content) == {
        "messages": [{"role": "user", "content": [{"text": "Say hello."}]}]
    }


# --- SigV4 (the `bedrock` extra) --------------------------------------------------

ACCESS_KEY = "AKIDEXAMPLE7QUX4Z2B"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKENvalue0123456789abcdef"


def test_sigv4_signs_what_is_sent_as_botocore_does_for_a_fixed_clock(
    monkeypatch: pytest.MonkeyPatch, make_request: Callable[..., Request]
) -> None:
    pytest.importorskip("botocore")
    import datetime  # noqa: PLC0415

    import botocore.auth  # noqa: PLC0415
    import botocore.session  # noqa: PLC0415
    from botocore.awsrequest import AWSRequest  # noqa: PLC0415
    from botocore.credentials import Credentials  # noqa: PLC0415

    credentials = Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)
    fixed = datetime.datetime(2026, 12, 7, 14, 5, 9)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: fixed)

    class Session:
        def get_credentials(self) -> Credentials:
            return credentials

    monkeypatch.setattr(botocore.session, "get_session", Session)
    built = _build({}, region=REGION, headers={"X-Client-Name": "batch-7"})
    sent = built.build_request(ask(make_request), MODEL, stream=False)

    assert str(sent.url) == f"{BASE}/model/{MODEL_IN_URL}/converse"
    assert sent.headers["x-amz-date"] == "20261207T140509Z"
    assert sent.headers["x-amz-security-token"] == SESSION_TOKEN
    authorization = sent.headers["authorization"]
    assert authorization.startswith(
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20261207/{REGION}/bedrock/aws4_request, "
        "SignedHeaders=content-length;content-type;host;x-amz-date;"
        "x-amz-security-token;x-client-name, Signature="
    )
    # botocore's own signer over exactly the URL, headers and body that go out.
    unsigned = {
        name: value
        for name, value in sent.headers.items()
        if name not in ("authorization", "x-amz-date", "x-amz-security-token")
    }
    expected = AWSRequest(method="POST", url=str(sent.url), headers=unsigned, data=sent.content)
    botocore.auth.SigV4Auth(credentials, "bedrock", REGION).add_auth(expected)
    assert authorization == expected.headers["Authorization"]
    for secret in (SECRET_KEY, SESSION_TOKEN):
        assert secret not in redact(f"echoed {secret}")


def test_expiring_credentials_are_refreshed_before_a_request_is_signed(
    monkeypatch: pytest.MonkeyPatch, make_request: Callable[..., Request]
) -> None:
    pytest.importorskip("botocore")
    import datetime  # noqa: PLC0415

    import botocore.session  # noqa: PLC0415
    from botocore.credentials import RefreshableCredentials  # noqa: PLC0415

    issued: list[str] = []

    def metadata(access_key: str, minutes: int) -> dict[str, str]:
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=minutes)
        return {
            "access_key": access_key,
            "secret_key": f"{SECRET_KEY}{access_key[-1]}",
            "token": f"{SESSION_TOKEN}{access_key[-1]}",
            "expiry_time": expiry.isoformat(),
        }

    def refresh() -> dict[str, str]:
        issued.append(f"ASIAREFRESHED0000{len(issued) + 1}")
        return metadata(issued[-1], 60)

    # A role's credentials, five minutes from expiry: inside botocore's refresh window.
    credentials = RefreshableCredentials.create_from_metadata(
        metadata("ASIAABOUTTOEXPIRE0", 5), refresh, "assume-role"
    )

    class Session:
        def get_credentials(self) -> RefreshableCredentials:
            return credentials

    monkeypatch.setattr(botocore.session, "get_session", Session)
    built = _build({}, region=REGION)
    first = built.build_request(ask(make_request), MODEL, stream=False)
    second = built.build_request(ask(make_request), MODEL, stream=False)

    assert issued == ["ASIAREFRESHED00001"]  # refreshed once, then good for an hour
    for sent in (first, second):
        assert f"Credential={issued[0]}/" in sent.headers["authorization"]
        assert sent.headers["x-amz-security-token"] == f"{SESSION_TOKEN}1"
    # The new secrets are known to the redactor before they are used.
    assert f"{SECRET_KEY}1" not in redact(f"echoed {SECRET_KEY}1")
    assert f"{SESSION_TOKEN}1" not in redact(f"echoed {SESSION_TOKEN}1")


@pytest.mark.parametrize(
    ("runtime", "listed_at"),
    [
        (None, f"https://bedrock.{REGION}.amazonaws.com"),
        (
            "https://bedrock-runtime-fips.us-east-1.amazonaws.com",
            "https://bedrock-fips.us-east-1.amazonaws.com",
        ),
        ("https://llm-proxy.internal:8443/aws", "https://llm-proxy.internal:8443/aws"),
    ],
)
def test_the_health_probe_lists_foundation_models_beside_the_runtime_host(
    runtime: str | None, listed_at: str
) -> None:
    env = {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": runtime} if runtime else {}
    probe = _build(env, region=REGION, api_key=SecretStr(KEY)).health_request()
    assert probe.method == "GET"
    assert str(probe.url) == f"{listed_at}/foundation-models?byOutputModality=TEXT"
    assert probe.headers["authorization"] == f"Bearer {KEY}"


def test_sigv4_without_a_region_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("botocore")
    import botocore.session  # noqa: PLC0415
    from botocore.credentials import Credentials  # noqa: PLC0415

    class Session:
        def get_credentials(self) -> Credentials:
            return Credentials(ACCESS_KEY, SECRET_KEY)

    monkeypatch.setattr(botocore.session, "get_session", Session)
    with pytest.raises(ConfigError, match="SigV4 signing needs the region"):
        _build({}, base_url="https://vpce.example.com")


def test_no_aws_credentials_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("botocore")
    import botocore.session  # noqa: PLC0415

    class Session:
        def get_credentials(self) -> None:
            return None

    monkeypatch.setattr(botocore.session, "get_session", Session)
    with pytest.raises(ConfigError, match="no AWS credentials found"):
        _build({}, region=REGION)


@pytest.mark.parametrize(
    ("model", "lacking"),
    [
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", {Capability.NO_PARALLEL_TOOLS}),
        ("us.anthropic.claude-opus-4-6-v1:0", {Capability.NO_PARALLEL_TOOLS}),
        (
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            {Capability.NO_PARALLEL_TOOLS, Capability.JSON_SCHEMA},
        ),
        ("us.amazon.nova-pro-v1:0", {Capability.NO_PARALLEL_TOOLS, Capability.JSON_SCHEMA}),
        (
            "amazon.nova-micro-v1:0",
            {Capability.NO_PARALLEL_TOOLS, Capability.JSON_SCHEMA, Capability.VISION},
        ),
        ("amazon.titan-text-express-v1", set(Capability)),
    ],
)
def test_the_capability_table_serves_what_each_bedrock_model_has(
    model: str, lacking: set[Capability]
) -> None:
    config = VendorConfig(type="bedrock", region=REGION)
    assert set(Capability) - served(config, model) == lacking
