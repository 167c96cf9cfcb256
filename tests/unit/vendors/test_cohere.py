"""Cohere v2 Chat over a mock transport: exact requests, replies, typed streams, errors."""

from __future__ import annotations

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
from dispatcher.vendors.cohere import ChatStreamParser, CohereVendor
from tests.unit.vendors.conftest import (
    Recorder,
    collect,
    cut_off_response,
    json_response,
    sse_response,
)

# Shaped like a real Cohere key: no prefix and no field name a generic pattern would catch.
KEY = "Xk3vQ9pL2mN8rT5wY7zA1bC4dE6fG0hJ2kL4mN6p"
BASE = "https://api.cohere.com"
REPLY = {
    "id": "5f0c-1",
    "finish_reason": "COMPLETE",
    "message": {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "A greeting is wanted."},
            {"type": "text", "text": "Hi"},
            {"type": "text", "text": " there"},
        ],
    },
    "usage": {
        "billed_units": {"input_tokens": 9, "output_tokens": 3},
        "tokens": {"input_tokens": 74.0, "output_tokens": 3.0},
    },
}
STREAM = [
    'event: message-start\ndata: {"id":"5f0c-1","type":"message-start","delta":{"message":{"role":"assistant","content":[],"tool_plan":"","tool_calls":[],"citations":[]}}}',
    'event: content-start\ndata: {"type":"content-start","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}}',
    'event: content-delta\ndata: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"Hi"}}}}',
    ": keep-alive comment",
    'event: citation-start\ndata: {"type":"citation-start","index":0,"delta":{"message":{"citations":{"start":0,"end":2,"text":"Hi"}}}}',
    'event: debug\ndata: {"type":"debug","prompt":"..."}',
    'event: content-delta\ndata: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":" there"}}},"new_field":1}',
    'event: content-end\ndata: {"type":"content-end","index":0}',
    'event: message-end\ndata: {"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":9,"output_tokens":3},"tokens":{"input_tokens":74,"output_tokens":3}}}}',
    "data: [DONE]",
]


def vendor(recorder: Recorder, **config: Any) -> CohereVendor:
    settings = {"type": "cohere", "api_key": SecretStr(KEY), **config}
    return CohereVendor("cohere", VendorConfig(**settings), recorder.client())


def cohere_request(make_request: Callable[..., Request], **overrides: Any) -> Request:
    return make_request(model="command-a-03-2025", **overrides)


async def test_complete_sends_the_exact_request(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    request = cohere_request(
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
        extra_body={"k": 40, "safety_mode": "CONTEXTUAL"},
    )
    await vendor(rec, headers={"X-Client-Name": "dispatcher"}).complete(request)
    sent = rec.last
    assert sent.method == "POST"
    assert str(sent.url) == f"{BASE}/v2/chat"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["x-client-name"] == "dispatcher"
    assert rec.last_json() == {
        "model": "command-a-03-2025",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "How are you?"},
        ],
        "temperature": 0.2,
        "max_tokens": 256,
        "p": 0.9,
        "stop_sequences": ["###"],
        "k": 40,
        "safety_mode": "CONTEXTUAL",
    }


async def test_unset_options_and_stream_are_left_out_of_the_body(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec).complete(cohere_request(make_request))
    assert rec.last_json() == {
        "model": "command-a-03-2025",
        "messages": [{"role": "user", "content": "Say hello."}],
    }


async def test_the_route_model_replaces_the_requested_one(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec).complete(cohere_request(make_request), model="command-r7b-12-2024")
    assert rec.last_json()["model"] == "command-r7b-12-2024"


async def test_complete_joins_text_items_and_reads_model_side_token_counts(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    response = await vendor(recorder(json_response(200, REPLY))).complete(
        cohere_request(make_request)
    )
    assert response.content == "Hi there"
    assert response.usage == Usage(prompt_tokens=74, completion_tokens=3, total_tokens=77)
    assert isinstance(response.usage.prompt_tokens, int)
    assert response.model == "command-a-03-2025"
    assert response.vendor == "cohere"
    assert response.finish_reason is FinishReason.STOP
    assert response.vendor_finish_reason == "COMPLETE"


async def test_usage_falls_back_to_billed_units_when_tokens_is_missing(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    body = {**REPLY, "usage": {"billed_units": {"input_tokens": 9.0, "output_tokens": 3.0}}}
    response = await vendor(recorder(json_response(200, body))).complete(
        cohere_request(make_request)
    )
    assert response.usage == Usage(prompt_tokens=9, completion_tokens=3, total_tokens=12)


async def test_a_reply_without_usage_counts_zero_tokens(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    body = {key: value for key, value in REPLY.items() if key != "usage"}
    response = await vendor(recorder(json_response(200, body))).complete(
        cohere_request(make_request)
    )
    assert response.usage == Usage()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("COMPLETE", FinishReason.STOP),
        ("STOP_SEQUENCE", FinishReason.STOP),
        ("MAX_TOKENS", FinishReason.LENGTH),
        ("TOOL_CALL", FinishReason.TOOL_CALLS),
        ("ERROR", FinishReason.ERROR),
        ("TIMEOUT", FinishReason.ERROR),
        ("SOMETHING_NEW", FinishReason.ERROR),
    ],
)
async def test_every_finish_reason_maps_to_the_common_set(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    raw: str,
    expected: FinishReason,
) -> None:
    body = {**REPLY, "finish_reason": raw}
    response = await vendor(recorder(json_response(200, body))).complete(
        cohere_request(make_request)
    )
    assert response.finish_reason is expected
    assert response.vendor_finish_reason == raw


async def test_stream_sends_stream_true_and_yields_text_then_the_final_delta(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(sse_response(STREAM))
    deltas = [d async for d in vendor(rec).stream(cohere_request(make_request, stream=True))]
    assert str(rec.last.url) == f"{BASE}/v2/chat"
    assert rec.last.headers["authorization"] == f"Bearer {KEY}"
    assert rec.last_json() == {
        "model": "command-a-03-2025",
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream": True,
    }
    assert [d.text for d in deltas[:-1]] == ["Hi", " there"]
    final = deltas[-1]
    assert final.finish_reason is FinishReason.STOP
    assert final.vendor_finish_reason == "COMPLETE"
    assert final.usage == Usage(prompt_tokens=74, completion_tokens=3, total_tokens=77)


def test_stream_parser_ignores_tool_and_unknown_events_and_reports_max_tokens() -> None:
    events = [
        ServerSentEvent(event="tool-plan-delta", data='{"type":"tool-plan-delta","delta":{}}'),
        ServerSentEvent(event="brand-new", data='{"type":"brand-new","delta":{"x":1}}'),
        ServerSentEvent(
            event="content-delta",
            data='{"type":"content-delta","delta":{"message":{"content":{"text":"cut"}}}}',
        ),
        ServerSentEvent(
            event="message-end",
            data='{"type":"message-end","delta":{"finish_reason":"MAX_TOKENS","usage":{"billed_units":{"input_tokens":2,"output_tokens":1}}}}',
        ),
    ]
    deltas = feed_all(ChatStreamParser("cohere"), events)
    assert [d.text for d in deltas] == ["cut", ""]
    assert deltas[-1].finish_reason is FinishReason.LENGTH
    assert deltas[-1].usage == Usage(prompt_tokens=2, completion_tokens=1, total_tokens=3)


async def test_a_message_end_with_error_raises_the_vendors_message(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    events = [
        *STREAM[:3],
        'event: message-end\ndata: {"type":"message-end","delta":{"finish_reason":"ERROR","error":"internal generation failure"}}',
    ]
    received: list[str] = []
    stream = vendor(recorder(sse_response(events))).stream(cohere_request(make_request))
    with pytest.raises(VendorUnavailable, match="internal generation failure") as caught:
        await collect(stream, received)
    assert received == ["Hi"]
    assert caught.value.retryable is True
    assert caught.value.vendor == "cohere"


async def test_a_message_end_with_timeout_raises_a_retryable_timeout(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    events = [
        *STREAM[:3],
        'event: message-end\ndata: {"type":"message-end","delta":{"finish_reason":"TIMEOUT"}}',
    ]
    with pytest.raises(VendorTimeout) as caught:
        _ = [
            d
            async for d in vendor(recorder(sse_response(events))).stream(
                cohere_request(make_request)
            )
        ]
    assert caught.value.retryable is True
    assert caught.value.vendor == "cohere"


async def test_a_stream_without_message_end_is_broken_not_finished(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(sse_response([*STREAM[:8], "data: [DONE]"]))
    with pytest.raises(StreamBroken, match="message-end") as caught:
        _ = [d async for d in vendor(rec).stream(cohere_request(make_request))]
    assert caught.value.partial is True
    assert caught.value.retryable is True


async def test_a_connection_dropped_mid_stream_is_a_retryable_broken_stream(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    half = ("\n\n".join(STREAM[:3]) + "\n\n").encode()
    received: list[str] = []
    stream = vendor(recorder(cut_off_response(half))).stream(cohere_request(make_request))
    with pytest.raises(StreamBroken) as caught:
        await collect(stream, received)
    assert received == ["Hi"]
    assert caught.value.partial is True


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return json_response(status, {"id": "err-1", "message": message}, headers)


RATE_LIMITED = _error(
    429,
    "You are using a Trial key, which is limited to 10 API calls / minute.",
    {"retry-after": "2.5"},
)
CANCELLED = _error(499, "request cancelled by the client")
BAD_TOKEN = _error(401, f"invalid api token: {KEY}")
OVERLOADED = _error(503, "service unavailable")

# Real error bodies and the typed error each must become: checked, with every other
# format's, by tests/unit/vendors/test_wire_contract.py.
ERRORS = [
    pytest.param(
        _error(400, "invalid request: message must not be empty"), InvalidRequest, id="400"
    ),
    pytest.param(BAD_TOKEN, VendorAuthError, id="401"),
    pytest.param(_error(402, "please add a payment method"), VendorQuotaExceeded, id="402"),
    pytest.param(_error(403, "forbidden"), VendorAuthError, id="403"),
    pytest.param(_error(404, "model 'command-x' not found"), InvalidRequest, id="404"),
    pytest.param(_error(422, "unprocessable entity"), InvalidRequest, id="422"),
    pytest.param(RATE_LIMITED, VendorRateLimited, id="429"),
    pytest.param(_error(498, f"invalid token {KEY}"), VendorAuthError, id="498"),
    pytest.param(CANCELLED, InvalidRequest, id="499"),
    pytest.param(_error(500, "internal server error"), VendorUnavailable, id="500"),
    pytest.param(_error(501, "not implemented"), InvalidRequest, id="501"),
    pytest.param(OVERLOADED, VendorUnavailable, id="503"),
    pytest.param(_error(504, "gateway timeout"), VendorTimeout, id="504"),
    pytest.param(
        json_response(400, {"message": "too many tokens: 9000 > 8192"}), InvalidRequest, id="no-id"
    ),
    pytest.param(httpx.Response(502, text="<html>Bad gateway</html>"), VendorUnavailable, id="502"),
]


async def test_a_429_carries_the_retry_after_header(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    with pytest.raises(VendorRateLimited) as caught:
        await vendor(recorder(RATE_LIMITED)).complete(cohere_request(make_request))
    assert caught.value.retry_after_s == 2.5


async def test_a_request_cancelled_by_the_client_is_not_retried(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    with pytest.raises(InvalidRequest, match="cancelled by the client") as caught:
        await vendor(recorder(CANCELLED)).complete(cohere_request(make_request))
    assert caught.value.retryable is False


async def test_errors_before_a_stream_starts_are_typed_too(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    with pytest.raises(VendorAuthError) as caught:
        _ = [d async for d in vendor(recorder(BAD_TOKEN)).stream(cohere_request(make_request))]
    assert caught.value.status_code == 401
    assert KEY not in str(caught.value)


async def test_health_check_lists_models_with_bearer_and_reports_status(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(json_response(200, {"models": []}))
    health = await vendor(rec).health_check()
    assert rec.last.method == "GET"
    assert str(rec.last.url) == f"{BASE}/v1/models"
    assert rec.last.headers["authorization"] == f"Bearer {KEY}"
    assert health.status is HealthStatus.HEALTHY
    bad = await vendor(recorder(BAD_TOKEN)).health_check()
    assert bad.status is HealthStatus.UNHEALTHY
    assert KEY not in bad.detail
    busy = await vendor(recorder(OVERLOADED)).health_check()
    assert busy.status is HealthStatus.DEGRADED


async def test_base_url_is_configurable(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec, base_url="http://127.0.0.1:9999/").complete(cohere_request(make_request))
    assert str(rec.last.url) == "http://127.0.0.1:9999/v2/chat"
