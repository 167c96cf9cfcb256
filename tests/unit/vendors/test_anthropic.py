"""Anthropic Messages over a mock transport: exact requests, replies, streams, errors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
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
from dispatcher.routing.pricing import Price
from dispatcher.vendors.anthropic import (
    DEFAULT_MAX_TOKENS,
    AnthropicVendor,
    MessagesStreamParser,
    build_body,
)
from dispatcher.vendors.base import feed_all
from tests.unit.vendors.conftest import (
    Recorder,
    collect,
    cut_off_response,
    json_response,
    sse_response,
)

KEY = "sk-ant-api03-test-0123456789abcdefABCDEF"
MODEL = "claude-x"
NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()
REPLY = {
    "id": "msg_01Ab",
    "type": "message",
    "role": "assistant",
    "model": "claude-x-20260101",
    "content": [
        {"type": "thinking", "thinking": "The user greets me.", "signature": "EqQB"},
        {"type": "text", "text": "Hi"},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
        {"type": "text", "text": " there"},
    ],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "output_tokens": 4,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    },
}
MESSAGE_START = 'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_01Ab","type":"message","role":"assistant","model":"claude-x-20260101","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":1}}}'
TEXT_START = 'event: content_block_start\ndata: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}'
HI = 'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hi"}}'
MESSAGE_STOP = 'event: message_stop\ndata: {"type":"message_stop"}'
STREAM = [
    MESSAGE_START,
    'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}',
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Greeting."}}',
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}',
    'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}',
    TEXT_START,
    'event: ping\ndata: {"type": "ping"}',
    HI,
    ": keep-alive comment",
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":{"type":"brand_new_delta","text":"not reply text"}}',
    'event: brand_new_event\ndata: {"type":"brand_new_event","text":"not reply text"}',
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,\ndata: "delta":{"type":"text_delta","text":" there"}}',
    'event: content_block_stop\ndata: {"type":"content_block_stop","index":1}',
    'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":4}}',
    MESSAGE_STOP,
]


def vendor(recorder: Recorder, **config: Any) -> AnthropicVendor:
    settings = {"type": "anthropic", "api_key": SecretStr(KEY), **config}
    return AnthropicVendor(
        "anthropic", VendorConfig(**settings), recorder.client(), now=lambda: NOW
    )


def ask(make_request: Callable[..., Request], **overrides: Any) -> Request:
    return make_request(model=MODEL, **overrides)


def _error(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_9"}
    return json_response(status, body, headers)


async def test_complete_posts_to_v1_messages_with_x_api_key_and_the_default_version(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec, headers={"anthropic-beta": "feature-a"}).complete(ask(make_request))
    sent = rec.last
    assert sent.method == "POST"
    assert str(sent.url) == "https://api.anthropic.com/v1/messages"
    assert sent.headers["x-api-key"] == KEY
    assert "authorization" not in sent.headers
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["anthropic-beta"] == "feature-a"


async def test_a_full_request_maps_to_the_exact_messages_body(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    request = ask(
        make_request,
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content="Hi"),
            Message(role="assistant", content="Hello."),
            Message(role="system", content="Answer in English."),
            Message(role="user", content="How are you?"),
        ],
        temperature=0.2,
        top_p=0.9,
        max_tokens=256,
        stop=["###"],
        user="u-1",
        extra_body={"top_k": 5},
    )
    await vendor(rec).complete(request)
    assert rec.last_json() == {
        "model": MODEL,
        "system": "Be brief.\n\nAnswer in English.",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "How are you?"},
        ],
        "max_tokens": 256,
        "temperature": 0.2,
        "stop_sequences": ["###"],
        "metadata": {"user_id": "u-1"},
        "top_k": 5,
    }


async def test_a_minimal_request_gets_the_default_max_tokens_and_nothing_else(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec).complete(ask(make_request))
    assert DEFAULT_MAX_TOKENS == 4096
    assert rec.last_json() == {
        "model": MODEL,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Say hello."}],
    }


def test_top_p_is_sent_under_2023_06_01_when_temperature_is_not_set(
    make_request: Callable[..., Request],
) -> None:
    body = build_body(ask(make_request, top_p=0.9), MODEL, stream=False, api_version="2023-06-01")
    assert body["top_p"] == 0.9
    assert "temperature" not in body


async def test_version_2026_10_21_drops_temperature_and_top_p_and_says_so_once(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = recorder(json_response(200, REPLY))
    new = vendor(rec, api_version="2026-10-21")
    caplog.set_level(logging.WARNING, logger="dispatcher.vendors.anthropic")
    for _ in range(2):
        await new.complete(ask(make_request, temperature=0.2, top_p=0.9))
        body = rec.last_json()
        assert "temperature" not in body
        assert "top_p" not in body
    assert rec.last.headers["anthropic-version"] == "2026-10-21"
    assert [r.message for r in caplog.records if "refuses temperature" in r.message] == [
        "vendor anthropic: anthropic-version 2026-10-21 refuses temperature and top_p; not sending them"
    ]


async def test_a_request_with_only_system_messages_is_refused_before_sending(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    with pytest.raises(InvalidRequest, match="user or assistant message") as caught:
        await vendor(rec).complete(
            ask(make_request, messages=[Message(role="system", content="x")])
        )
    assert caught.value.vendor == "anthropic"
    assert rec.requests == []


async def test_complete_joins_only_text_blocks_and_reads_usage_model_and_request_id(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY, headers={"request-id": "req_1"}))
    prices = {"claude-*": Price(input_per_mtok=1_000_000, output_per_mtok=2_000_000)}
    response = await vendor(rec, prices=prices).complete(ask(make_request))
    assert response.content == "Hi there"
    assert response.usage == Usage(prompt_tokens=12, completion_tokens=4, total_tokens=16)
    assert response.model == "claude-x-20260101"
    assert response.vendor == "anthropic"
    assert response.finish_reason is FinishReason.STOP
    assert response.vendor_finish_reason == "end_turn"
    assert response.vendor_request_id == "req_1"
    assert response.cost_usd == 12 * 1 + 4 * 2


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("end_turn", FinishReason.STOP),
        ("stop_sequence", FinishReason.STOP),
        ("max_tokens", FinishReason.LENGTH),
        ("model_context_window_exceeded", FinishReason.LENGTH),
        ("pause_turn", FinishReason.LENGTH),
        ("tool_use", FinishReason.TOOL_CALLS),
        ("refusal", FinishReason.CONTENT_FILTER),
        ("something_new", FinishReason.ERROR),
    ],
)
async def test_stop_reasons_map_to_the_common_set(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    raw: str,
    expected: FinishReason,
) -> None:
    body = {**REPLY, "stop_reason": raw}
    response = await vendor(recorder(json_response(200, body))).complete(ask(make_request))
    assert response.finish_reason is expected
    assert response.vendor_finish_reason == raw


async def test_stream_yields_only_reply_text_then_the_final_delta(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(sse_response(STREAM))
    deltas = [d async for d in vendor(rec).stream(ask(make_request, stream=True))]
    assert rec.last_json()["stream"] is True
    assert [d.text for d in deltas[:-1]] == ["Hi", " there"]
    final = deltas[-1]
    assert final.text == ""
    assert final.finish_reason is FinishReason.STOP
    assert final.vendor_finish_reason == "end_turn"
    # output_tokens is a running total: 4 replaces message_start's placeholder 1.
    assert final.usage == Usage(prompt_tokens=12, completion_tokens=4, total_tokens=16)
    assert final.model == "claude-x-20260101"


async def test_crlf_framed_streams_parse_the_same(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(sse_response(STREAM, eol="\r\n"))
    deltas = [d async for d in vendor(rec).stream(ask(make_request))]
    assert "".join(d.text for d in deltas) == "Hi there"


def test_later_usage_counts_overwrite_earlier_ones_instead_of_adding() -> None:
    events = [
        ServerSentEvent(
            event="message_start",
            data='{"type":"message_start","message":{"model":"m","usage":{"input_tokens":12,"output_tokens":1}}}',
        ),
        ServerSentEvent(
            event="message_delta",
            data='{"type":"message_delta","delta":{"stop_reason":null},"usage":{"output_tokens":2}}',
        ),
        ServerSentEvent(
            event="message_delta",
            data='{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"input_tokens":15,"output_tokens":7}}',
        ),
        ServerSentEvent(event="message_stop", data='{"type":"message_stop"}'),
    ]
    final = feed_all(MessagesStreamParser("anthropic"), events)[-1]
    assert final.usage == Usage(prompt_tokens=15, completion_tokens=7, total_tokens=22)
    assert final.finish_reason is FinishReason.LENGTH


def test_events_without_an_event_line_are_recognised_by_their_json_type() -> None:
    events = [
        ServerSentEvent(
            data='{"type":"content_block_delta","index":0,\n"delta":{"type":"text_delta","text":"a"}}'
        ),
        ServerSentEvent(data='{"type":"message_stop"}'),
    ]
    deltas = feed_all(MessagesStreamParser("anthropic"), events)
    assert [d.text for d in deltas] == ["a", ""]
    assert deltas[-1].usage is None
    assert deltas[-1].finish_reason is FinishReason.STOP


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        # A server failure after the stream began is a broken stream (partial text seen).
        ("overloaded_error", StreamBroken),
        ("api_error", StreamBroken),
        ("rate_limit_error", VendorRateLimited),
        ("timeout_error", VendorTimeout),
        ("authentication_error", VendorAuthError),
        ("billing_error", VendorQuotaExceeded),
        ("invalid_request_error", InvalidRequest),
        ("brand_new_error", StreamBroken),
    ],
)
async def test_an_error_event_inside_a_200_stream_raises_the_class_of_its_type(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    kind: str,
    expected: type[Exception],
) -> None:
    error = (
        f'event: error\ndata: {{"type":"error","error":{{"type":"{kind}","message":"Went wrong"}}}}'
    )
    rec = recorder(sse_response([MESSAGE_START, TEXT_START, HI, error]))
    received: list[str] = []
    with pytest.raises(expected) as caught:
        await collect(vendor(rec).stream(ask(make_request)), received)
    assert received == ["Hi"]
    assert type(caught.value) is expected
    if isinstance(caught.value, StreamBroken):
        assert caught.value.partial is True
    message = str(caught.value)
    assert (
        f"error inside the stream: Went wrong ({kind}); the reply so far is incomplete" in message
    )
    assert getattr(caught.value, "vendor", None) == "anthropic"


def test_an_error_event_that_is_not_json_is_still_a_retryable_failure() -> None:
    with pytest.raises(VendorUnavailable, match="upstream reset") as caught:
        MessagesStreamParser("anthropic").feed(
            ServerSentEvent(event="error", data="upstream reset")
        )
    assert caught.value.retryable is True
    assert "incomplete" not in str(caught.value)


async def test_a_stream_without_message_stop_is_broken_and_partial(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(sse_response(STREAM[:-1]))
    with pytest.raises(StreamBroken, match="message_stop") as caught:
        _ = [d async for d in vendor(rec).stream(ask(make_request))]
    assert caught.value.partial is True
    assert caught.value.retryable is True
    assert caught.value.vendor == "anthropic"


def test_a_stream_that_ends_before_any_text_is_broken_but_not_partial() -> None:
    parser = MessagesStreamParser("anthropic")
    parser.feed(
        ServerSentEvent(event="message_start", data='{"type":"message_start","message":{}}')
    )
    with pytest.raises(StreamBroken) as caught:
        parser.finish()
    assert caught.value.partial is False


async def test_a_connection_dropped_mid_stream_is_a_partial_broken_stream(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    half = ("\n\n".join([MESSAGE_START, TEXT_START, HI]) + "\n\n").encode()
    received: list[str] = []
    stream = vendor(recorder(cut_off_response(half))).stream(ask(make_request))
    with pytest.raises(StreamBroken, match="broke off: RemoteProtocolError") as caught:
        await collect(stream, received)
    assert received == ["Hi"]
    assert caught.value.partial is True


# Real error bodies and the typed error each must become: checked, with every other
# format's, by tests/unit/vendors/test_wire_contract.py.
ERRORS = [
    (_error(400, "invalid_request_error", "messages: roles must alternate"), InvalidRequest),
    (_error(401, "authentication_error", f"invalid x-api-key: {KEY}"), VendorAuthError),
    (_error(402, "billing_error", "Your credit balance is too low"), VendorQuotaExceeded),
    (_error(403, "permission_error", "Your API key does not have permission"), VendorAuthError),
    (_error(404, "not_found_error", "model: claude-x"), InvalidRequest),
    (_error(413, "request_too_large", "Request exceeds the maximum size"), InvalidRequest),
    (
        _error(429, "rate_limit_error", "Number of requests has exceeded your rate limit"),
        VendorRateLimited,
    ),
    (_error(500, "api_error", "Internal server error"), VendorUnavailable),
    (_error(504, "timeout_error", "Request timed out"), VendorTimeout),
    (_error(529, "overloaded_error", "Overloaded"), VendorUnavailable),
    (httpx.Response(502, text="<html>Bad gateway</html>"), VendorUnavailable),
]


async def test_an_api_key_echoed_in_an_error_body_is_masked(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    message = f'bad header "x-api-key": "{KEY}" (key {KEY} is revoked)'
    rec = recorder(_error(401, "authentication_error", message))
    with pytest.raises(VendorAuthError) as caught:
        await vendor(rec).complete(ask(make_request))
    text = str(caught.value)
    assert KEY not in text
    assert KEY not in caught.value.message
    assert "***" in text
    assert "check the API key" in text


async def test_the_error_type_and_message_reach_the_error_text(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    with pytest.raises(VendorUnavailable) as caught:
        await vendor(recorder(_error(529, "overloaded_error", "Overloaded"))).complete(
            ask(make_request)
        )
    assert (
        str(caught.value)
        == "anthropic answered HTTP 529: Overloaded (overloaded_error) (vendor=anthropic, status=529)"
    )


def _iso(offset_s: float) -> str:
    return datetime.fromtimestamp(NOW + offset_s, tz=UTC).isoformat().replace("+00:00", "Z")


RESETS = {
    "anthropic-ratelimit-requests-remaining": "0",
    "anthropic-ratelimit-requests-reset": _iso(20),
    "anthropic-ratelimit-tokens-remaining": "0",
    "anthropic-ratelimit-tokens-reset": _iso(30.5),
    "anthropic-ratelimit-input-tokens-remaining": "5000",
    "anthropic-ratelimit-input-tokens-reset": _iso(50),
}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after-ms": "1500", "retry-after": "9", **RESETS}, 1.5, id="ms-first"),
        pytest.param({"retry-after": "9", **RESETS}, 9.0, id="seconds-next"),
        pytest.param({"retry-after": "Fri, 01 May 2026 12:00:12 GMT"}, 12.0, id="http-date"),
        pytest.param(RESETS, 30.5, id="latest-exhausted-reset"),
        pytest.param(
            {
                "anthropic-ratelimit-requests-reset": _iso(20),
                "anthropic-ratelimit-tokens-reset": "2026-05-01T14:00:40+02:00",
            },
            40.0,
            id="latest-reset-when-none-says-exhausted",
        ),
        pytest.param({"anthropic-ratelimit-tokens-reset": _iso(-5)}, 0.0, id="past-reset-is-zero"),
        pytest.param({"anthropic-ratelimit-tokens-reset": "soon"}, None, id="unreadable-reset"),
        pytest.param({}, None, id="no-hint"),
    ],
)
async def test_retry_after_follows_the_header_precedence(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    headers: dict[str, str],
    expected: float | None,
) -> None:
    response = _error(429, "rate_limit_error", "Too many requests", headers)
    with pytest.raises(VendorRateLimited) as caught:
        await vendor(recorder(response)).complete(ask(make_request))
    assert caught.value.retry_after_s == expected


async def test_errors_before_a_stream_starts_are_typed_too(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(_error(529, "overloaded_error", "Overloaded"))
    with pytest.raises(VendorUnavailable) as caught:
        _ = [d async for d in vendor(rec).stream(ask(make_request))]
    assert caught.value.status_code == 529
    assert not isinstance(caught.value, StreamBroken)


async def test_health_check_lists_models_with_the_anthropic_headers(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(json_response(200, {"data": [], "has_more": False}))
    health = await vendor(rec, api_version="2026-10-21").health_check()
    sent = rec.last
    assert sent.method == "GET"
    assert str(sent.url) == "https://api.anthropic.com/v1/models"
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2026-10-21"
    assert "authorization" not in sent.headers
    assert health.status is HealthStatus.HEALTHY


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (_error(401, "authentication_error", "invalid x-api-key"), HealthStatus.UNHEALTHY),
        (_error(403, "permission_error", "not allowed"), HealthStatus.UNHEALTHY),
        (_error(529, "overloaded_error", "Overloaded"), HealthStatus.DEGRADED),
        (_error(429, "rate_limit_error", "slow down"), HealthStatus.DEGRADED),
    ],
)
async def test_health_check_maps_failures_to_unhealthy_or_degraded(
    recorder: Callable[..., Recorder], response: httpx.Response, expected: HealthStatus
) -> None:
    health = await vendor(recorder(response)).health_check()
    assert health.status is expected
    assert health.detail.startswith(f"anthropic answered HTTP {response.status_code}")


async def test_an_unreachable_vendor_is_unhealthy() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(refused))
    config = VendorConfig(type="anthropic", api_key=SecretStr(KEY))
    health = await AnthropicVendor("anthropic", config, client).health_check()
    assert health.status is HealthStatus.UNHEALTHY
    assert "ConnectError" in health.detail


async def test_a_configured_base_url_is_used_without_its_trailing_slash(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec, base_url="http://127.0.0.1:9999/").complete(ask(make_request))
    assert str(rec.last.url) == "http://127.0.0.1:9999/v1/messages"


async def test_without_an_api_key_no_key_header_is_sent(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    config = VendorConfig(type="anthropic", base_url="http://127.0.0.1:9999")
    await AnthropicVendor("local", config, rec.client()).complete(ask(make_request))
    assert "x-api-key" not in rec.last.headers
    assert rec.last.headers["anthropic-version"] == "2023-06-01"
