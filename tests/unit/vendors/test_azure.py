"""Azure OpenAI over a mock transport: both URL forms, api-key auth, filter chunks, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from dispatcher import (
    ConfigError,
    ContentFiltered,
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
from dispatcher.vendors.azure import DEFAULT_API_VERSION, AzureOpenAIVendor
from tests.unit.vendors.conftest import Recorder, cut_off_response, json_response, sse_response

# Azure keys are 32 hex digits: no redaction pattern recognises that shape on its own.
KEY = "0123456789abcdef0123456789abcdef"
ENDPOINT = "https://contoso.openai.azure.com"
V1_ENDPOINT = "https://contoso.openai.azure.com/openai/v1"
DEPLOYMENT = "gpt4o-prod"
REPLY: dict[str, Any] = {
    "id": "chatcmpl-az",
    "object": "chat.completion",
    "created": 1760000000,
    "model": "gpt-4o-2024-11-20",
    "prompt_filter_results": [
        {"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False}}}
    ],
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hi there"},
            "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}},
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}
STREAM = [
    'data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}',
    'data: {"choices":[{"content_filter_results":{},"delta":{"role":"assistant","content":""},"finish_reason":null,"index":0}],"created":1760000000,"id":"chatcmpl-az","model":"gpt-4o-2024-11-20","object":"chat.completion.chunk"}',
    'data: {"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"delta":{"content":"Hi"},"finish_reason":null,"index":0}],"created":1760000000,"id":"chatcmpl-az","model":"gpt-4o-2024-11-20","object":"chat.completion.chunk"}',
    'data: {"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"delta":{"content":" there"},"finish_reason":null,"index":0}],"created":1760000000,"id":"chatcmpl-az","model":"gpt-4o-2024-11-20","object":"chat.completion.chunk"}',
    'data: {"choices":[{"content_filter_offsets":{"check_offset":0,"start_offset":0,"end_offset":8},"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"finish_reason":null,"index":0}],"created":0,"id":"","model":"","object":""}',
    'data: {"choices":[{"content_filter_results":{},"delta":{},"finish_reason":"stop","index":0}],"created":1760000000,"id":"chatcmpl-az","model":"gpt-4o-2024-11-20","object":"chat.completion.chunk"}',
    'data: {"choices":[],"created":1760000000,"id":"chatcmpl-az","model":"gpt-4o-2024-11-20","object":"chat.completion.chunk","usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}',
    "data: [DONE]",
]


def vendor(recorder: Recorder, **config: Any) -> AzureOpenAIVendor:
    settings = {"type": "azure", "api_key": SecretStr(KEY), "base_url": ENDPOINT, **config}
    return AzureOpenAIVendor("azure", VendorConfig(**settings), recorder.client())


def v1_vendor(recorder: Recorder, **config: Any) -> AzureOpenAIVendor:
    return vendor(recorder, base_url=V1_ENDPOINT, **config)


async def test_classic_url_names_the_deployment_and_the_default_api_version(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec).complete(make_request(model="smart"), model=DEPLOYMENT)
    assert rec.last.method == "POST"
    assert str(rec.last.url) == (
        f"{ENDPOINT}/openai/deployments/{DEPLOYMENT}/chat/completions?api-version=2024-10-21"
    )
    assert DEFAULT_API_VERSION == "2024-10-21"


async def test_classic_url_carries_the_configured_api_version(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    azure = vendor(rec, base_url=ENDPOINT + "/", api_version="2025-04-01-preview")
    await azure.complete(make_request(), model=DEPLOYMENT)
    assert str(rec.last.url) == (
        f"{ENDPOINT}/openai/deployments/{DEPLOYMENT}/chat/completions"
        "?api-version=2025-04-01-preview"
    )


async def test_classic_body_has_no_model_and_uses_max_tokens(
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
    )
    await vendor(rec).complete(request, model=DEPLOYMENT)
    assert rec.last_json() == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "max_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u-1",
        "stop": ["###"],
    }


async def test_the_key_goes_in_the_api_key_header_and_never_in_authorization(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec, headers={"x-ms-useragent": "dispatcher"}).complete(make_request())
    assert rec.last.headers["api-key"] == KEY
    assert "authorization" not in rec.last.headers
    assert rec.last.headers["content-type"] == "application/json"
    assert rec.last.headers["x-ms-useragent"] == "dispatcher"
    assert KEY not in str(rec.last.url)


async def test_bearer_auth_can_be_configured_for_entra_id_tokens(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec, auth=AuthConfig(scheme="bearer")).complete(make_request())
    assert rec.last.headers["authorization"] == f"Bearer {KEY}"
    assert "api-key" not in rec.last.headers


async def test_v1_url_has_no_api_version_and_the_deployment_is_the_body_model(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    azure = v1_vendor(rec, api_version="2024-10-21")
    await azure.complete(make_request(model="smart", max_tokens=9), model=DEPLOYMENT)
    assert str(rec.last.url) == f"{V1_ENDPOINT}/chat/completions"
    assert rec.last.url.query == b""
    assert rec.last.headers["api-key"] == KEY
    assert "authorization" not in rec.last.headers
    assert rec.last_json() == {
        "model": DEPLOYMENT,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 9,
    }


async def test_a_trailing_slash_on_the_v1_endpoint_still_selects_the_v1_surface(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec, base_url=V1_ENDPOINT + "/").complete(make_request(), model=DEPLOYMENT)
    assert str(rec.last.url) == f"{V1_ENDPOINT}/chat/completions"
    assert rec.last_json()["model"] == DEPLOYMENT


async def test_max_tokens_field_can_be_switched_for_reasoning_deployments(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    azure = vendor(rec, max_tokens_field="max_completion_tokens")
    await azure.complete(make_request(max_tokens=64), model="o3-mini")
    body = rec.last_json()
    assert body["max_completion_tokens"] == 64
    assert "max_tokens" not in body


async def test_complete_parses_a_reply_with_filter_results(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    headers = {"x-request-id": "req-az-1", "apim-request-id": "apim-1"}
    rec = recorder(json_response(200, REPLY, headers=headers))
    response = await vendor(rec).complete(make_request(), model=DEPLOYMENT)
    assert response.content == "Hi there"
    assert response.usage == Usage(prompt_tokens=12, completion_tokens=3, total_tokens=15)
    assert response.model == "gpt-4o-2024-11-20"
    assert response.vendor == "azure"
    assert response.finish_reason is FinishReason.STOP
    assert response.vendor_request_id == "req-az-1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("stop", FinishReason.STOP),
        ("length", FinishReason.LENGTH),
        ("content_filter", FinishReason.CONTENT_FILTER),
        ("tool_calls", FinishReason.TOOL_CALLS),
    ],
)
async def test_finish_reasons_map_as_for_openai(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    raw: str,
    expected: FinishReason,
) -> None:
    body = {**REPLY, "choices": [{**REPLY["choices"][0], "finish_reason": raw}]}
    response = await vendor(recorder(json_response(200, body))).complete(make_request())
    assert response.finish_reason is expected
    assert response.vendor_finish_reason == raw


async def test_stream_skips_filter_only_chunks_and_reports_usage(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(sse_response(STREAM))
    deltas = [d async for d in vendor(rec).stream(make_request(), model=DEPLOYMENT)]
    body = rec.last_json()
    assert "model" not in body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert [d.text for d in deltas[:-1]] == ["Hi", " there"]
    final = deltas[-1]
    assert final.finish_reason is FinishReason.STOP
    assert final.usage == Usage(prompt_tokens=12, completion_tokens=3, total_tokens=15)
    assert final.model == "gpt-4o-2024-11-20"


async def test_a_stream_without_done_is_broken(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(sse_response(STREAM[:-1]))
    with pytest.raises(StreamBroken, match=r"\[DONE\]") as caught:
        _ = [d async for d in vendor(rec).stream(make_request())]
    assert caught.value.partial is True
    assert caught.value.vendor == "azure"


async def test_a_connection_cut_after_the_filter_chunk_is_a_broken_stream_with_no_text(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    half = (STREAM[0] + "\n\n").encode()
    with pytest.raises(StreamBroken) as caught:
        _ = [d async for d in vendor(recorder(cut_off_response(half))).stream(make_request())]
    assert caught.value.partial is False
    assert caught.value.retryable is True


async def test_a_connection_cut_mid_answer_is_a_partial_broken_stream(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    half = ("\n\n".join(STREAM[:3]) + "\n\n").encode()
    received: list[str] = []

    async def consume() -> None:
        async for delta in vendor(recorder(cut_off_response(half))).stream(make_request()):
            received.append(delta.text)

    with pytest.raises(StreamBroken) as caught:
        await consume()
    assert received == ["Hi"]
    assert caught.value.partial is True


# Real error bodies and the typed error each must become: checked, with every other
# format's, by tests/unit/vendors/test_wire_contract.py.
ERRORS = [
    (
        json_response(
            400,
            {
                "error": {
                    "code": "content_filter",
                    "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
                    "param": "prompt",
                    "status": 400,
                    "innererror": {
                        "code": "ResponsibleAIPolicyViolation",
                        "content_filter_result": {"hate": {"filtered": True, "severity": "high"}},
                    },
                }
            },
        ),
        ContentFiltered,
    ),
    (
        json_response(
            400,
            {"error": {"code": "BadRequest", "message": "Unrecognized request argument supplied"}},
        ),
        InvalidRequest,
    ),
    (
        json_response(
            401,
            {
                "error": {
                    "code": "401",
                    "message": f"Access denied due to invalid subscription key {KEY} or wrong API endpoint.",
                }
            },
        ),
        VendorAuthError,
    ),
    (
        json_response(
            403,
            {"error": {"code": "403", "message": f"Key {KEY} lacks access to this resource."}},
        ),
        VendorAuthError,
    ),
    (
        json_response(
            404,
            {
                "error": {
                    "code": "DeploymentNotFound",
                    "message": "The API deployment for this resource does not exist.",
                }
            },
        ),
        InvalidRequest,
    ),
    (
        json_response(404, {"error": {"code": "404", "message": "Resource not found"}}),
        InvalidRequest,
    ),
    (
        json_response(
            429,
            {
                "error": {
                    "code": "429",
                    "message": "Requests to the ChatCompletions_Create Operation have exceeded the rate limit. Please retry after 2 seconds.",
                }
            },
            {"retry-after": "2", "retry-after-ms": "1750"},
        ),
        VendorRateLimited,
    ),
    (json_response(408, {"error": {"code": "408", "message": "timeout"}}), VendorTimeout),
    (
        json_response(500, {"error": {"code": "InternalServerError", "message": "oops"}}),
        VendorUnavailable,
    ),
    (json_response(503, {"error": {"code": "503", "message": "busy"}}), VendorUnavailable),
    (json_response(504, {"error": {"code": "504", "message": "gateway"}}), VendorTimeout),
    (httpx.Response(502, text=f"<html>Bad gateway api-key {KEY}</html>"), VendorUnavailable),
]


async def test_deployment_not_found_says_so_and_is_final(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    response, _ = ERRORS[4]
    with pytest.raises(InvalidRequest, match="DeploymentNotFound") as caught:
        await vendor(recorder(response)).complete(make_request(), model="no-such")
    assert caught.value.retryable is False


async def test_a_429_waits_for_retry_after_ms_before_retry_after(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    response, _ = ERRORS[6]
    with pytest.raises(VendorRateLimited) as caught:
        await vendor(recorder(response)).complete(make_request())
    assert caught.value.retry_after_s == 1.75
    only_seconds = json_response(429, {"error": {"code": "429"}}, {"retry-after": "2"})
    with pytest.raises(VendorRateLimited) as caught:
        await vendor(recorder(only_seconds)).complete(make_request())
    assert caught.value.retry_after_s == 2.0


async def test_errors_before_a_stream_starts_are_typed_too(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    response, _ = ERRORS[2]
    with pytest.raises(VendorAuthError) as caught:
        _ = [d async for d in vendor(recorder(response)).stream(make_request())]
    assert caught.value.status_code == 401
    assert KEY not in str(caught.value)


async def test_an_error_chunk_inside_a_200_stream_is_raised(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    events = [*STREAM[:3], 'data: {"error": {"code": "500", "message": "The server had an error"}}']
    with pytest.raises(VendorUnavailable, match="The server had an error"):
        _ = [d async for d in vendor(recorder(sse_response(events))).stream(make_request())]


async def test_classic_health_check_lists_models_with_the_api_version(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(json_response(200, {"data": []}))
    health = await vendor(rec).health_check()
    assert rec.last.method == "GET"
    assert str(rec.last.url) == f"{ENDPOINT}/openai/models?api-version=2024-10-21"
    assert rec.last.headers["api-key"] == KEY
    assert "authorization" not in rec.last.headers
    assert health.status is HealthStatus.HEALTHY


async def test_v1_health_check_lists_models_without_an_api_version(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(json_response(200, {"data": []}))
    health = await v1_vendor(rec).health_check()
    assert str(rec.last.url) == f"{V1_ENDPOINT}/models"
    assert rec.last.headers["api-key"] == KEY
    assert health.status is HealthStatus.HEALTHY


async def test_health_check_reports_a_bad_key_as_unhealthy_and_busy_as_degraded(
    recorder: Callable[..., Recorder],
) -> None:
    bad = await vendor(recorder(ERRORS[2][0])).health_check()
    assert bad.status is HealthStatus.UNHEALTHY
    assert KEY not in bad.detail
    busy = await vendor(recorder(ERRORS[9][0])).health_check()
    assert busy.status is HealthStatus.DEGRADED


def test_an_azure_vendor_without_an_endpoint_is_a_config_error() -> None:
    config = VendorConfig(type="azure", api_key=SecretStr(KEY))
    with pytest.raises(ConfigError, match=r"vendors\.az\.base_url"):
        AzureOpenAIVendor("az", config)
