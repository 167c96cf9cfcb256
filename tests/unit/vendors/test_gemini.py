"""Google Gemini over a mock transport: exact requests, replies, CRLF streams, RPC errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent
from pydantic import SecretStr

from dispatcher import (
    FinishReason,
    HealthStatus,
    InvalidRequest,
    Message,
    Request,
    StreamBroken,
    Usage,
    VendorAuthError,
    VendorConfig,
    VendorQuotaExceeded,
    VendorRateLimited,
    VendorTimeout,
    VendorUnavailable,
)
from dispatcher.vendors.base import feed_all
from dispatcher.vendors.gemini import (
    API_VERSION,
    GeminiVendor,
    GenerateContentStreamParser,
)
from tests.unit.vendors.conftest import (
    Recorder,
    collect,
    cut_off_response,
    json_response,
    sse_response,
)

KEY = "AIzaSyTest-gemini-0123456789abcdefXYZ"
BASE = "https://generativelanguage.googleapis.com"
REPLY = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "Let me think about greetings.", "thought": True},
                    {"text": "Hi"},
                    {"text": " there"},
                ],
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 12,
        "candidatesTokenCount": 3,
        "thoughtsTokenCount": 5,
        "totalTokenCount": 20,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}],
    },
    "modelVersion": "gemini-2.5-flash-001",
    "responseId": "mKq1",
}
STREAM = [
    'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hi"}]},"index":0}],"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":1,"totalTokenCount":13},"modelVersion":"gemini-2.5-flash-001","responseId":"mKq1"}',
    'data: {"candidates":[{"content":{"role":"model","parts":[{"text":" there"}]},"index":0}],"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":2,"totalTokenCount":14},"modelVersion":"gemini-2.5-flash-001","newField":true}',
    'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"!"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":3,"totalTokenCount":15},"modelVersion":"gemini-2.5-flash-001"}',
]


def vendor(recorder: Recorder, **config: Any) -> GeminiVendor:
    settings = {"type": "gemini", "api_key": SecretStr(KEY), **config}
    return GeminiVendor("gemini", VendorConfig(**settings), recorder.client())


def gemini_request(make_request: Callable[..., Request], **overrides: Any) -> Request:
    return make_request(model="gemini-2.5-flash", **overrides)


def reply_with(candidate: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    base_candidate: dict[str, Any] = REPLY["candidates"][0]  # type: ignore[index]
    body = {**REPLY, "candidates": [{**base_candidate, **(candidate or {})}]}
    body.update(fields)
    return body


async def test_complete_sends_the_exact_request(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    request = gemini_request(
        make_request,
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="system", content="Answer in English."),
            Message(role="user", content="Hi"),
            Message(role="assistant", content="Hello!"),
            Message(role="user", content="How are you?"),
        ],
        temperature=0.2,
        top_p=0.9,
        max_tokens=256,
        stop=["###"],
        user="u-1",
        extra_body={"safetySettings": [{"category": "X", "threshold": "Y"}]},
    )
    await vendor(rec, headers={"x-goog-user-project": "proj-1"}).complete(request)
    sent = rec.last
    assert sent.method == "POST"
    assert str(sent.url) == f"{BASE}/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY
    assert "authorization" not in sent.headers
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["x-goog-user-project"] == "proj-1"
    assert rec.last_json() == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello!"}]},
            {"role": "user", "parts": [{"text": "How are you?"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief.\n\nAnswer in English."}]},
        "generationConfig": {
            "temperature": 0.2,
            "maxOutputTokens": 256,
            "topP": 0.9,
            "stopSequences": ["###"],
        },
        "safetySettings": [{"category": "X", "threshold": "Y"}],
    }


async def test_unset_options_are_left_out_of_the_body(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec).complete(gemini_request(make_request))
    assert rec.last_json() == {"contents": [{"role": "user", "parts": [{"text": "Say hello."}]}]}


async def test_extra_body_extends_generation_config_instead_of_replacing_it(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    request = gemini_request(
        make_request, temperature=0.5, extra_body={"generationConfig": {"topK": 40}}
    )
    await vendor(rec).complete(request)
    assert rec.last_json()["generationConfig"] == {"temperature": 0.5, "topK": 40}


async def test_the_route_model_goes_in_the_path_without_a_models_prefix(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec).complete(gemini_request(make_request), model="models/gemini-2.5-pro")
    assert rec.last.url.path == f"/{API_VERSION}/models/gemini-2.5-pro:generateContent"


async def test_the_key_always_travels_in_the_header_never_in_the_url(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    configured = vendor(rec, auth={"scheme": "query", "query_param": "key"})
    await configured.complete(gemini_request(make_request))
    assert KEY not in str(rec.last.url)
    assert rec.last.headers["x-goog-api-key"] == KEY


async def test_complete_joins_text_parts_skipping_thoughts_and_reads_usage_and_model(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    response = await vendor(recorder(json_response(200, REPLY))).complete(
        gemini_request(make_request)
    )
    assert response.content == "Hi there"
    assert response.usage == Usage(
        prompt_tokens=12, completion_tokens=8, total_tokens=20, reasoning_tokens=5
    )
    assert response.model == "gemini-2.5-flash-001"
    assert response.vendor == "gemini"
    assert response.finish_reason is FinishReason.STOP
    assert response.vendor_finish_reason == "STOP"


async def test_missing_usage_counts_default_to_zero(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    body = reply_with(usageMetadata={"promptTokenCount": 7})
    response = await vendor(recorder(json_response(200, body))).complete(
        gemini_request(make_request)
    )
    assert response.usage == Usage(prompt_tokens=7, completion_tokens=0, total_tokens=7)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("STOP", FinishReason.STOP),
        ("MAX_TOKENS", FinishReason.LENGTH),
        ("SAFETY", FinishReason.CONTENT_FILTER),
        ("RECITATION", FinishReason.CONTENT_FILTER),
        ("LANGUAGE", FinishReason.CONTENT_FILTER),
        ("BLOCKLIST", FinishReason.CONTENT_FILTER),
        ("PROHIBITED_CONTENT", FinishReason.CONTENT_FILTER),
        ("SPII", FinishReason.CONTENT_FILTER),
        ("IMAGE_SAFETY", FinishReason.CONTENT_FILTER),
        ("IMAGE_PROHIBITED_CONTENT", FinishReason.CONTENT_FILTER),
        ("IMAGE_RECITATION", FinishReason.CONTENT_FILTER),
        ("MODEL_ARMOR", FinishReason.CONTENT_FILTER),
        ("MALFORMED_FUNCTION_CALL", FinishReason.ERROR),
        ("UNEXPECTED_TOOL_CALL", FinishReason.ERROR),
        ("TOO_MANY_TOOL_CALLS", FinishReason.ERROR),
        ("MALFORMED_RESPONSE", FinishReason.ERROR),
        ("MISSING_THOUGHT_SIGNATURE", FinishReason.ERROR),
        ("OTHER", FinishReason.ERROR),
        ("FINISH_REASON_UNSPECIFIED", FinishReason.ERROR),
        ("SOMETHING_NEW", FinishReason.ERROR),
    ],
)
async def test_every_finish_reason_maps_to_the_common_set_keeping_the_text(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    raw: str,
    expected: FinishReason,
) -> None:
    body = reply_with({"finishReason": raw})
    response = await vendor(recorder(json_response(200, body))).complete(
        gemini_request(make_request)
    )
    assert response.finish_reason is expected
    assert response.vendor_finish_reason == raw
    assert response.content == "Hi there"


async def test_a_function_call_that_stops_is_a_tool_call(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    content = {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}],
    }
    body = reply_with({"content": content, "finishReason": "STOP"})
    response = await vendor(recorder(json_response(200, body))).complete(
        gemini_request(make_request)
    )
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.content == ""


async def test_a_blocked_prompt_without_candidates_is_content_filtered_with_no_text(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    body = {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
        "modelVersion": "gemini-2.5-flash-001",
    }
    response = await vendor(recorder(json_response(200, body))).complete(
        gemini_request(make_request)
    )
    assert response.content == ""
    assert response.finish_reason is FinishReason.CONTENT_FILTER
    assert response.vendor_finish_reason == "PROHIBITED_CONTENT"
    assert response.usage == Usage(prompt_tokens=9, completion_tokens=0, total_tokens=9)


async def test_a_safety_stop_without_content_is_content_filtered(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    body = {**REPLY, "candidates": [{"finishReason": "SAFETY", "index": 0}]}
    response = await vendor(recorder(json_response(200, body))).complete(
        gemini_request(make_request)
    )
    assert response.content == ""
    assert response.finish_reason is FinishReason.CONTENT_FILTER


async def test_stream_uses_alt_sse_and_parses_crlf_chunks_keeping_the_last_usage(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(sse_response(STREAM, eol="\r\n"))
    request = gemini_request(make_request, stream=True, max_tokens=64)
    deltas = [d async for d in vendor(rec).stream(request)]
    sent = rec.last
    assert str(sent.url) == f"{BASE}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert sent.headers["x-goog-api-key"] == KEY
    assert rec.last_json() == {
        "contents": [{"role": "user", "parts": [{"text": "Say hello."}]}],
        "generationConfig": {"maxOutputTokens": 64},
    }
    assert [d.text for d in deltas[:-1]] == ["Hi", " there", "!"]
    final = deltas[-1]
    assert final.finish_reason is FinishReason.STOP
    assert final.vendor_finish_reason == "STOP"
    assert final.usage == Usage(prompt_tokens=12, completion_tokens=3, total_tokens=15)
    assert final.model == "gemini-2.5-flash-001"


def test_stream_parser_skips_thoughts_and_reports_a_streamed_function_call() -> None:
    events = [
        ServerSentEvent(
            data='{"candidates":[{"content":{"parts":[{"text":"hmm","thought":true}]},"index":0}]}'
        ),
        ServerSentEvent(data='{"candidates":[{"content":{"parts":[{"text":"Calling."}]}}]}'),
        ServerSentEvent(
            data='{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}}}]},"finishReason":"STOP"}]}'
        ),
    ]
    deltas = feed_all(GenerateContentStreamParser("gemini"), events)
    assert [d.text for d in deltas] == ["Calling.", ""]
    assert deltas[-1].finish_reason is FinishReason.TOOL_CALLS
    assert deltas[-1].usage is None


def test_a_stream_whose_prompt_was_blocked_ends_content_filtered() -> None:
    events = [
        ServerSentEvent(
            data='{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":4}}'
        )
    ]
    deltas = feed_all(GenerateContentStreamParser("gemini"), events)
    assert len(deltas) == 1
    assert deltas[0].finish_reason is FinishReason.CONTENT_FILTER
    assert deltas[0].vendor_finish_reason == "SAFETY"
    assert deltas[0].usage == Usage(prompt_tokens=4, total_tokens=4)


async def test_a_stream_that_ends_without_a_finish_reason_is_broken(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(sse_response(STREAM[:2], eol="\r\n"))
    received: list[str] = []
    stream = vendor(rec).stream(gemini_request(make_request))
    with pytest.raises(StreamBroken, match="finishReason") as caught:
        await collect(stream, received)
    assert received == ["Hi", " there"]
    assert caught.value.partial is True
    assert caught.value.vendor == "gemini"
    assert caught.value.retryable is True


async def test_a_connection_dropped_mid_stream_is_a_retryable_broken_stream(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    half = (STREAM[0] + "\r\n\r\n").encode()
    received: list[str] = []
    stream = vendor(recorder(cut_off_response(half))).stream(gemini_request(make_request))
    with pytest.raises(StreamBroken) as caught:
        await collect(stream, received)
    assert received == ["Hi"]
    assert caught.value.partial is True


@pytest.mark.parametrize(
    ("error", "expected", "status"),
    [
        (
            {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"},
            VendorUnavailable,
            503,
        ),
        (
            {"code": 504, "message": "Deadline exceeded.", "status": "DEADLINE_EXCEEDED"},
            VendorTimeout,
            504,
        ),
        ({"message": "Internal error encountered."}, VendorUnavailable, 500),
    ],
)
async def test_an_error_chunk_inside_a_200_stream_is_raised_as_classified(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    error: dict[str, Any],
    expected: type[Exception],
    status: int,
) -> None:
    events = [*STREAM[:1], "data: " + json.dumps({"error": error})]
    rec = recorder(sse_response(events, eol="\r\n"))
    with pytest.raises(expected, match=str(error["message"])) as caught:
        _ = [d async for d in vendor(rec).stream(gemini_request(make_request))]
    assert getattr(caught.value, "status_code", None) == status
    assert getattr(caught.value, "vendor", None) == "gemini"


def _error(status: int, rpc: str, message: str, details: list[Any] | None = None) -> httpx.Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": rpc}
    if details is not None:
        error["details"] = details
    return json_response(status, {"error": error})


RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "23s"}


def _quota(quota_id: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{"quotaMetric": "generate_content_requests", "quotaId": quota_id}],
    }


BAD_KEY = _error(
    400,
    "INVALID_ARGUMENT",
    f"API key not valid. Please pass a valid API key. Got {KEY}",
    [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }
    ],
)
RATE_LIMITED = _error(
    429,
    "RESOURCE_EXHAUSTED",
    "Resource has been exhausted (e.g. check quota).",
    [_quota("GenerateRequestsPerMinutePerProjectPerModel"), RETRY_INFO],
)
DAILY_QUOTA = _error(
    429,
    "RESOURCE_EXHAUSTED",
    "You exceeded your current quota.",
    [_quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier"), RETRY_INFO],
)
OVERLOADED = _error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")

# Real error bodies and the typed error each must become: checked, with every other
# format's, by tests/unit/vendors/test_wire_contract.py.
ERRORS = [
    pytest.param(
        _error(400, "INVALID_ARGUMENT", "Please use a valid role: user, model."),
        InvalidRequest,
        id="400-invalid-argument",
    ),
    pytest.param(BAD_KEY, VendorAuthError, id="400-api-key-invalid"),
    pytest.param(
        _error(
            400,
            "FAILED_PRECONDITION",
            "User location is not supported for the API use without a billing account linked.",
        ),
        VendorAuthError,
        id="400-failed-precondition",
    ),
    pytest.param(
        _error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
        VendorAuthError,
        id="401-unauthenticated",
    ),
    pytest.param(
        _error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
        VendorAuthError,
        id="403-permission-denied",
    ),
    pytest.param(
        _error(404, "NOT_FOUND", "models/gemini-9 is not found for API version v1beta."),
        InvalidRequest,
        id="404-not-found",
    ),
    pytest.param(RATE_LIMITED, VendorRateLimited, id="429-per-minute"),
    pytest.param(DAILY_QUOTA, VendorQuotaExceeded, id="429-per-day"),
    pytest.param(
        _error(500, "INTERNAL", "An internal error has occurred."),
        VendorUnavailable,
        id="500-internal",
    ),
    pytest.param(OVERLOADED, VendorUnavailable, id="503-unavailable"),
    pytest.param(
        _error(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
        VendorTimeout,
        id="504-deadline-exceeded",
    ),
    pytest.param(
        httpx.Response(502, text="<html>Bad gateway</html>"), VendorUnavailable, id="502-html"
    ),
]


async def test_an_echoed_key_is_masked_even_when_it_has_no_known_shape(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    odd_key = "plainkeywithoutdigitsorprefix"
    response = _error(400, "INVALID_ARGUMENT", f"bad request for {odd_key}")
    configured = GeminiVendor(
        "gemini",
        VendorConfig(type="gemini", api_key=SecretStr(odd_key)),
        recorder(response).client(),
    )
    with pytest.raises(InvalidRequest) as caught:
        await configured.complete(gemini_request(make_request))
    assert odd_key not in str(caught.value)


async def test_the_retry_delay_comes_from_retry_info_when_no_header_says_otherwise(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    with pytest.raises(VendorRateLimited) as caught:
        await vendor(recorder(RATE_LIMITED)).complete(gemini_request(make_request))
    assert caught.value.retry_after_s == 23.0


async def test_a_retry_after_header_wins_over_retry_info(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [RETRY_INFO]}}
    response = json_response(429, body, headers={"retry-after": "4"})
    with pytest.raises(VendorRateLimited) as caught:
        await vendor(recorder(response)).complete(gemini_request(make_request))
    assert caught.value.retry_after_s == 4.0


async def test_a_per_day_quota_is_final_not_retried(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    with pytest.raises(VendorQuotaExceeded) as caught:
        await vendor(recorder(DAILY_QUOTA)).complete(gemini_request(make_request))
    assert caught.value.retryable is False


async def test_errors_before_a_stream_starts_are_typed_too(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."))
    with pytest.raises(VendorAuthError) as caught:
        _ = [d async for d in vendor(rec).stream(gemini_request(make_request))]
    assert caught.value.status_code == 403


async def test_health_check_lists_models_with_the_key_header_and_reports_status(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(json_response(200, {"models": []}))
    health = await vendor(rec).health_check()
    assert rec.last.method == "GET"
    assert str(rec.last.url) == f"{BASE}/v1beta/models"
    assert rec.last.headers["x-goog-api-key"] == KEY
    assert health.status is HealthStatus.HEALTHY
    bad = await vendor(recorder(BAD_KEY)).health_check()
    assert bad.status is HealthStatus.UNHEALTHY
    assert KEY not in bad.detail
    busy = await vendor(recorder(OVERLOADED)).health_check()
    assert busy.status is HealthStatus.DEGRADED


async def test_base_url_is_configurable(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec, base_url="http://127.0.0.1:9999/").complete(gemini_request(make_request))
    assert (
        str(rec.last.url) == "http://127.0.0.1:9999/v1beta/models/gemini-2.5-flash:generateContent"
    )
