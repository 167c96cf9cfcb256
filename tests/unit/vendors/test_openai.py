"""OpenAI Chat Completions over a mock transport: exact requests, replies, streams, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent
from pydantic import SecretStr

from dispatcher import (
    ContentFiltered,
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
from dispatcher.routing.pricing import Price
from dispatcher.vendors.base import feed_all
from dispatcher.vendors.openai import ChatStreamParser, OpenAIVendor
from tests.unit.vendors.conftest import Recorder, cut_off_response, json_response, sse_response

KEY = "sk-test-openai-0123456789abcdef"
REPLY = {
    "id": "chatcmpl-abc",
    "object": "chat.completion",
    "created": 1760000000,
    "model": "gpt-4o-mini-2026-01-01",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "logprobs": None,
            "message": {"role": "assistant", "content": "Hi there", "refusal": None},
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}
STREAM = [
    'data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}',
    ": keep-alive comment",
    'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null,"obfuscation":"Qx"}',
    'data: {"id":"c","choices":[{"index":0,"delta":{"content":" there"},"finish_reason":null}],"usage":null}',
    'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}',
    'data: {"id":"c","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}',
    "data: [DONE]",
]


def vendor(recorder: Recorder, **config: Any) -> OpenAIVendor:
    settings = {"type": "openai", "api_key": SecretStr(KEY), **config}
    return OpenAIVendor("openai", VendorConfig(**settings), recorder.client())


async def test_complete_sends_the_exact_request(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    request = make_request(
        messages=[Message(role="system", content="Be brief."), Message(role="user", content="Hi")],
        temperature=0.2,
        top_p=0.9,
        max_tokens=256,
        stop=["###"],
        user="u-1",
        seed=7,
        extra_body={"service_tier": "flex"},
    )
    await vendor(rec, headers={"OpenAI-Organization": "org-1"}).complete(request)
    sent = rec.last
    assert sent.method == "POST"
    assert str(sent.url) == "https://api.openai.com/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["openai-organization"] == "org-1"
    assert rec.last_json() == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "max_completion_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u-1",
        "stop": ["###"],
        "seed": 7,
        "service_tier": "flex",
    }


async def test_unset_options_are_left_out_of_the_body(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec).complete(make_request())
    assert rec.last_json() == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello."}],
    }


async def test_the_route_model_replaces_the_requested_one(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec).complete(make_request(model="smart"), model="gpt-4o")
    assert rec.last_json()["model"] == "gpt-4o"


async def test_complete_parses_text_usage_model_and_cost(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY, headers={"x-request-id": "req_1"}))
    prices = {"gpt-4o-mini*": Price(input_per_mtok=1_000_000, output_per_mtok=2_000_000)}
    response = await vendor(rec, prices=prices).complete(make_request())
    assert response.content == "Hi there"
    assert response.usage == Usage(prompt_tokens=12, completion_tokens=3, total_tokens=15)
    assert response.model == "gpt-4o-mini-2026-01-01"
    assert response.vendor == "openai"
    assert response.finish_reason is FinishReason.STOP
    assert response.vendor_finish_reason == "stop"
    assert response.vendor_request_id == "req_1"
    assert response.cost_usd == 12 * 1 + 3 * 2
    assert response.latency_ms > 0


USAGE_WITH_DETAILS = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 256,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}


async def test_cached_prompt_and_reasoning_tokens_are_read_from_the_usage_details(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, {**REPLY, "usage": USAGE_WITH_DETAILS}))
    response = await vendor(rec).complete(make_request())
    assert response.usage == Usage(
        prompt_tokens=2006,
        completion_tokens=300,
        total_tokens=2306,
        cached_prompt_tokens=1920,
        reasoning_tokens=256,
    )


@pytest.mark.parametrize(
    "details",
    [
        {},
        {"prompt_tokens_details": None, "completion_tokens_details": None},
        {"prompt_tokens_details": {}, "completion_tokens_details": {"reasoning_tokens": None}},
    ],
)
async def test_missing_or_null_usage_details_count_as_zero(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    details: dict[str, Any],
) -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, **details}
    response = await vendor(recorder(json_response(200, {**REPLY, "usage": usage}))).complete(
        make_request()
    )
    assert response.usage.cached_prompt_tokens == 0
    assert response.usage.reasoning_tokens == 0


def test_the_usage_chunk_of_a_stream_carries_the_details() -> None:
    usage_chunk = (
        'data: {"id":"c","choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":300,'
        '"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920},'
        '"completion_tokens_details":{"reasoning_tokens":256}}}'
    )
    items = [ServerSentEvent(data=usage_chunk[len("data: ") :]), ServerSentEvent(data="[DONE]")]
    final = feed_all(ChatStreamParser("openai"), items)[-1]
    assert final.usage is not None
    assert (final.usage.cached_prompt_tokens, final.usage.reasoning_tokens) == (1920, 256)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("stop", FinishReason.STOP),
        ("length", FinishReason.LENGTH),
        ("content_filter", FinishReason.CONTENT_FILTER),
        ("tool_calls", FinishReason.TOOL_CALLS),
        ("function_call", FinishReason.TOOL_CALLS),
        ("something_new", FinishReason.ERROR),
    ],
)
async def test_finish_reasons_map_to_the_common_set(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    raw: str,
    expected: FinishReason,
) -> None:
    body = {**REPLY, "choices": [{**REPLY["choices"][0], "finish_reason": raw}]}  # type: ignore[dict-item]
    response = await vendor(recorder(json_response(200, body))).complete(make_request())
    assert response.finish_reason is expected


async def test_a_refusal_is_returned_as_content_filtered_text(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    body = {**REPLY, "choices": [{"index": 0, "finish_reason": "stop", "message": message}]}
    response = await vendor(recorder(json_response(200, body))).complete(make_request())
    assert response.content == "I can't help with that."
    assert response.finish_reason is FinishReason.CONTENT_FILTER


async def test_stream_asks_for_usage_and_yields_text_then_the_final_delta(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(sse_response(STREAM))
    deltas = [d async for d in vendor(rec).stream(make_request(stream=True))]
    body = rec.last_json()
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert [d.text for d in deltas[:-1]] == ["Hi", " there"]
    final = deltas[-1]
    assert final.finish_reason is FinishReason.STOP
    assert final.usage == Usage(prompt_tokens=12, completion_tokens=3, total_tokens=15)
    assert final.model == "gpt-4o-mini"


def test_stream_parser_joins_multi_line_data_and_ignores_unknown_fields() -> None:
    events = [
        ServerSentEvent(data='{"choices":[{"index":0,\n"delta":{"content":"a"},"new_field":1}]}'),
        ServerSentEvent(
            data='{"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"length"}]}'
        ),
        ServerSentEvent(data="[DONE]"),
    ]
    deltas = feed_all(ChatStreamParser("openai"), events)
    assert [d.text for d in deltas[:-1]] == ["a", "b"]
    assert deltas[-1].finish_reason is FinishReason.LENGTH
    assert deltas[-1].usage is None


def test_azure_filter_only_chunks_with_empty_choices_or_no_delta_are_skipped() -> None:
    events = [
        ServerSentEvent(data='{"id":"","choices":[],"prompt_filter_results":[{"prompt_index":0}]}'),
        ServerSentEvent(data='{"choices":[{"index":0,"content_filter_results":{}}]}'),
        ServerSentEvent(
            data='{"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}'
        ),
        ServerSentEvent(data="[DONE]"),
    ]
    deltas = feed_all(ChatStreamParser("azure"), events)
    assert [d.text for d in deltas] == ["ok", ""]


async def test_crlf_framed_streams_parse_the_same(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    deltas = [
        d async for d in vendor(recorder(sse_response(STREAM, eol="\r\n"))).stream(make_request())
    ]
    assert "".join(d.text for d in deltas) == "Hi there"


async def test_a_stream_without_done_is_broken_not_finished(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(sse_response(STREAM[:-1]))
    with pytest.raises(StreamBroken, match=r"\[DONE\]") as caught:
        _ = [d async for d in vendor(rec).stream(make_request())]
    assert caught.value.partial is True
    assert caught.value.retryable is True


async def test_a_connection_dropped_mid_stream_is_a_retryable_broken_stream(
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


async def test_an_error_inside_a_200_stream_is_raised(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    events = [
        *STREAM[:3],
        'data: {"error": {"message": "The server had an error", "type": "server_error"}}',
    ]
    with pytest.raises(VendorUnavailable, match="The server had an error"):
        _ = [d async for d in vendor(recorder(sse_response(events))).stream(make_request())]


def _error(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return json_response(status, body, headers)


# Real error bodies and the typed error each must become: checked, with every other
# format's, by tests/unit/vendors/test_wire_contract.py.
ERRORS = [
    (
        _error(
            429,
            {
                "error": {
                    "message": "Rate limit reached",
                    "type": "requests",
                    "code": "rate_limit_exceeded",
                }
            },
            {"retry-after-ms": "1500", "retry-after": "9"},
        ),
        VendorRateLimited,
    ),
    (
        _error(
            429,
            {
                "error": {
                    "message": "You exceeded your quota",
                    "type": "insufficient_quota",
                    "code": "insufficient_quota",
                }
            },
        ),
        VendorQuotaExceeded,
    ),
    (
        _error(
            401,
            {
                "error": {
                    "message": f"Incorrect API key provided: {KEY}",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        ),
        VendorAuthError,
    ),
    (
        _error(403, {"error": {"message": "Country not supported", "type": "request_forbidden"}}),
        VendorAuthError,
    ),
    (
        _error(
            400,
            {
                "error": {
                    "message": "context_length_exceeded",
                    "type": "invalid_request_error",
                    "code": "context_length_exceeded",
                }
            },
        ),
        InvalidRequest,
    ),
    (
        _error(404, {"error": {"message": "The model does not exist", "code": "model_not_found"}}),
        InvalidRequest,
    ),
    (_error(422, {"error": {"message": "unprocessable"}}), InvalidRequest),
    (_error(408, {"error": {"message": "timeout"}}), VendorTimeout),
    (_error(409, {"error": {"message": "conflict"}}), VendorUnavailable),
    (
        _error(500, {"error": {"message": "server error", "type": "server_error"}}),
        VendorUnavailable,
    ),
    (_error(503, {"error": {"message": "slow down"}}), VendorUnavailable),
    (_error(504, {"error": {"message": "gateway timeout"}}), VendorTimeout),
    (httpx.Response(502, text="<html>Bad gateway</html>"), VendorUnavailable),
    (
        _error(
            400,
            {
                "error": {
                    "code": "content_filter",
                    "message": "filtered",
                    "innererror": {"code": "ResponsibleAIPolicyViolation"},
                }
            },
        ),
        ContentFiltered,
    ),
]


async def test_retry_after_ms_wins_over_retry_after(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    response, _ = ERRORS[0]
    with pytest.raises(VendorRateLimited) as caught:
        await vendor(recorder(response)).complete(make_request())
    assert caught.value.retry_after_s == 1.5


async def test_errors_before_a_stream_starts_are_typed_too(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(_error(401, {"error": {"message": "bad key"}}))
    with pytest.raises(VendorAuthError):
        _ = [d async for d in vendor(rec).stream(make_request())]


async def test_timeouts_and_refused_connections_are_retryable(
    make_request: Callable[..., Request],
) -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    config = VendorConfig(type="openai", api_key=SecretStr(KEY))
    for handler, expected in ((timeout, VendorTimeout), (refused, VendorUnavailable)):
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        with pytest.raises(expected) as caught:
            await OpenAIVendor("openai", config, client).complete(make_request())
        assert caught.value.retryable


async def test_health_check_lists_models_and_reports_status(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(json_response(200, {"data": []}))
    health = await vendor(rec).health_check()
    assert str(rec.last.url) == "https://api.openai.com/v1/models"
    assert rec.last.headers["authorization"] == f"Bearer {KEY}"
    assert health.status is HealthStatus.HEALTHY
    bad = await vendor(recorder(_error(401, {"error": {"message": "no"}}))).health_check()
    assert bad.status is HealthStatus.UNHEALTHY
    busy = await vendor(recorder(_error(503, {"error": {"message": "busy"}}))).health_check()
    assert busy.status is HealthStatus.DEGRADED


async def test_base_url_and_max_tokens_field_are_configurable(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    stand_in = vendor(rec, base_url="http://127.0.0.1:9999/v1/", max_tokens_field="max_tokens")
    await stand_in.complete(make_request(max_tokens=5))
    assert str(rec.last.url) == "http://127.0.0.1:9999/v1/chat/completions"
    assert rec.last_json()["max_tokens"] == 5


def test_estimate_cost_uses_the_configured_price(make_request: Callable[..., Request]) -> None:
    config = VendorConfig(
        type="openai", prices={"gpt-4o-mini": Price(input_per_mtok=1e6, output_per_mtok=0)}
    )
    vendor_ = OpenAIVendor("openai", config, httpx.AsyncClient())
    request = make_request(messages=[Message(role="user", content="x" * 8)], max_tokens=10)
    assert vendor_.estimate_cost(request) == 2 + 4  # 8 chars / 4 + 4 per message
    unconfigured = OpenAIVendor("o", VendorConfig(type="openai"))
    # gpt-4o-mini has a built-in price; a model the built-in table does not name has none.
    assert unconfigured.estimate_cost(request) == pytest.approx((6 * 0.15 + 10 * 0.6) / 1e6)
    assert unconfigured.estimate_cost(request, "my-own-finetune") is None
