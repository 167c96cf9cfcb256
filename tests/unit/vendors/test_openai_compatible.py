"""OpenAI-compatible servers over a mock transport: base URL, the five auth schemes, errors."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from dispatcher import (
    ConfigError,
    FinishReason,
    HealthStatus,
    InvalidRequest,
    Message,
    Request,
    Role,
    StreamBroken,
    Usage,
    VendorAuthError,
    VendorConfig,
    VendorRateLimited,
    VendorTimeout,
    VendorUnavailable,
)
from dispatcher.config.schema import AuthConfig
from dispatcher.vendors.openai_compatible import OpenAICompatibleVendor
from tests.unit.vendors.conftest import Recorder, cut_off_response, json_response, sse_response

# Groq-style key: not the "sk-" shape the redaction patterns know.
KEY = "gsk_test0123456789abcdefghij"
BASE = "http://vllm.internal:8000/v1"
REPLY: dict[str, Any] = {
    "id": "cmpl-1",
    "object": "chat.completion",
    "created": 1760000000,
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "choices": [
        {
            "index": 0,
            "finish_reason": "length",
            "message": {"role": "assistant", "content": "Hi there", "tool_calls": []},
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}
STREAM = [
    ": OPENROUTER PROCESSING",
    'data: {"id":"c","object":"chat.completion.chunk","model":"llama-3.1-8b","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}',
    'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}',
    'data: {"id":"c","choices":[{"index":0,"delta":{"content":" there"},"finish_reason":null}]}',
    'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"x_groq":{"id":"req_1"}}',
    'data: {"id":"c","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}',
    "data: [DONE]",
]


def vendor(recorder: Recorder, **config: Any) -> OpenAICompatibleVendor:
    settings = {"type": "openai_compatible", "api_key": SecretStr(KEY), "base_url": BASE, **config}
    return OpenAICompatibleVendor("local", VendorConfig(**settings), recorder.client())


async def test_complete_posts_the_openai_body_to_the_base_url_with_max_tokens(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    request = make_request(
        messages=[
            Message(role=Role.SYSTEM, content="Be brief."),
            Message(role=Role.USER, content="Hi"),
        ],
        temperature=0.2,
        top_p=0.9,
        max_tokens=256,
        stop=["###"],
        user="u-1",
        extra_body={"repetition_penalty": 1.1},
    )
    await vendor(rec, base_url=BASE + "/").complete(request, model="llama-3.1-8b")
    assert rec.last.method == "POST"
    assert str(rec.last.url) == f"{BASE}/chat/completions"
    assert rec.last_json() == {
        "model": "llama-3.1-8b",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "max_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u-1",
        "stop": ["###"],
        "repetition_penalty": 1.1,
    }


async def test_max_tokens_field_can_be_switched_to_the_new_name(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec, max_tokens_field="max_completion_tokens").complete(make_request(max_tokens=7))
    body = rec.last_json()
    assert body["max_completion_tokens"] == 7
    assert "max_tokens" not in body


async def test_a_key_without_auth_config_is_sent_as_bearer(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec).complete(make_request())
    assert rec.last.headers["authorization"] == f"Bearer {KEY}"
    assert str(rec.last.url) == f"{BASE}/chat/completions"


async def test_no_key_means_no_auth_at_all(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec, api_key=None).complete(make_request())
    assert "authorization" not in rec.last.headers
    assert rec.last.url.query == b""


BASIC = "Basic " + base64.b64encode(f"svc:{KEY}".encode()).decode()


@pytest.mark.parametrize(
    ("auth", "where"),
    [
        (AuthConfig(scheme="bearer"), (f"Bearer {KEY}", None, b"")),
        (AuthConfig(scheme="header", header_name="X-API-Key"), (None, KEY, b"")),
        (AuthConfig(scheme="query", query_param="key"), (None, None, f"key={KEY}".encode())),
        (AuthConfig(scheme="basic", username="svc"), (BASIC, None, b"")),
        (AuthConfig(scheme="none"), (None, None, b"")),
    ],
    ids=["bearer", "header", "query", "basic", "none"],
)
async def test_each_auth_scheme_puts_the_key_where_it_says_and_nowhere_else(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    auth: AuthConfig,
    where: tuple[str | None, str | None, bytes],
) -> None:
    authorization, x_api_key, query = where
    rec = recorder(json_response(200, REPLY))
    await vendor(rec, auth=auth).complete(make_request())
    sent = rec.last
    assert sent.url.path == "/v1/chat/completions"
    assert sent.url.query == query
    assert sent.headers.get("authorization") == authorization
    assert sent.headers.get("x-api-key") == x_api_key


async def test_complete_parses_text_usage_and_finish_reason(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY, headers={"x-request-id": "r-9"}))
    response = await vendor(rec).complete(make_request(), model="llama-3.1-8b")
    assert response.content == "Hi there"
    assert response.usage == Usage(prompt_tokens=12, completion_tokens=3, total_tokens=15)
    assert response.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert response.vendor == "local"
    assert response.finish_reason is FinishReason.LENGTH
    assert response.vendor_finish_reason == "length"
    assert response.vendor_request_id == "r-9"


async def test_a_reply_without_usage_counts_zero_tokens(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    body = {key: value for key, value in REPLY.items() if key != "usage"}
    response = await vendor(recorder(json_response(200, body))).complete(make_request())
    assert response.usage == Usage()
    assert response.content == "Hi there"


async def test_stream_ignores_comments_and_vendor_fields_and_reports_usage(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(sse_response(STREAM))
    deltas = [d async for d in vendor(rec).stream(make_request())]
    assert rec.last_json()["stream_options"] == {"include_usage": True}
    assert [d.text for d in deltas[:-1]] == ["Hi", " there"]
    assert deltas[-1].finish_reason is FinishReason.STOP
    assert deltas[-1].usage == Usage(prompt_tokens=12, completion_tokens=3, total_tokens=15)


async def test_a_stream_cut_off_before_done_is_broken(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    half = ("\n\n".join(STREAM[:3]) + "\n\n").encode()
    with pytest.raises(StreamBroken) as caught:
        _ = [d async for d in vendor(recorder(cut_off_response(half))).stream(make_request())]
    assert caught.value.partial is True
    with pytest.raises(StreamBroken, match=r"\[DONE\]"):
        _ = [d async for d in vendor(recorder(sse_response(STREAM[:-1]))).stream(make_request())]


async def test_an_error_chunk_inside_a_200_stream_is_raised(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    events = [*STREAM[:3], 'data: {"error": {"code": 502, "message": "Provider returned error"}}']
    with pytest.raises(VendorUnavailable, match="Provider returned error"):
        _ = [d async for d in vendor(recorder(sse_response(events))).stream(make_request())]


# Real error bodies and the typed error each must become: checked, with every other
# format's, by tests/unit/vendors/test_wire_contract.py.
ERRORS = [
    (
        json_response(
            401,
            {"error": {"message": f"Invalid API Key {KEY}", "type": "invalid_request_error"}},
        ),
        VendorAuthError,
    ),
    (json_response(403, {"error": {"message": f"key {KEY} is disabled"}}), VendorAuthError),
    (
        # vLLM's older flat error shape, with no "error" wrapper.
        json_response(
            400,
            {
                "object": "error",
                "message": "max_tokens is too large",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            },
        ),
        InvalidRequest,
    ),
    (
        json_response(404, {"error": {"message": "model not found", "code": "model_not_found"}}),
        InvalidRequest,
    ),
    (json_response(422, {"detail": [{"msg": "field required"}]}), InvalidRequest),
    (
        json_response(
            429,
            {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
            {"retry-after": "3"},
        ),
        VendorRateLimited,
    ),
    (json_response(500, {"error": {"message": "engine died"}}), VendorUnavailable),
    (json_response(503, {"error": {"message": "over capacity"}}), VendorUnavailable),
    (json_response(504, {"error": {"message": "upstream timed out"}}), VendorTimeout),
    (httpx.Response(502, text=f"Bad gateway; Authorization: Bearer {KEY}"), VendorUnavailable),
]


async def test_a_flat_vllm_error_keeps_its_message(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    response, _ = ERRORS[2]
    with pytest.raises(InvalidRequest, match="max_tokens is too large"):
        await vendor(recorder(response)).complete(make_request())


async def test_a_429_carries_the_retry_after_seconds(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    response, _ = ERRORS[5]
    with pytest.raises(VendorRateLimited) as caught:
        await vendor(recorder(response)).complete(make_request())
    assert caught.value.retry_after_s == 3.0


async def test_health_check_lists_models_with_the_configured_auth(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(json_response(200, {"object": "list", "data": []}))
    health = await vendor(
        rec, auth=AuthConfig(scheme="query", query_param="api_key")
    ).health_check()
    assert rec.last.method == "GET"
    assert str(rec.last.url) == f"{BASE}/models?api_key={KEY}"
    assert "authorization" not in rec.last.headers
    assert health.status is HealthStatus.HEALTHY
    bad = await vendor(recorder(ERRORS[0][0])).health_check()
    assert bad.status is HealthStatus.UNHEALTHY
    assert KEY not in bad.detail


def test_a_compatible_vendor_without_a_base_url_is_a_config_error() -> None:
    config = VendorConfig(type="openai_compatible", api_key=SecretStr(KEY))
    with pytest.raises(ConfigError, match=r"vendors\.local\.base_url"):
        OpenAICompatibleVendor("local", config)
