"""Ollama's native /api/chat over a mock transport: bodies, NDJSON streams, errors, health."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from dispatcher import (
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
    VendorUnavailable,
)
from dispatcher.vendors.base import feed_all
from dispatcher.vendors.ollama import ChatNdjsonParser, OllamaVendor
from tests.unit.vendors.conftest import Recorder, cut_off_response, json_response, ndjson_response

# A key for a remote Ollama behind auth: no shape the redaction patterns know.
KEY = "ollama-remote-key-0123456789"
LOCAL = "http://localhost:11434"
REPLY: dict[str, Any] = {
    "model": "llama3.2",
    "created_at": "2026-11-01T10:00:00.123456Z",
    "message": {"role": "assistant", "content": "Hi there"},
    "done": True,
    "done_reason": "stop",
    "total_duration": 812000000,
    "load_duration": 2100000,
    "prompt_eval_count": 12,
    "prompt_eval_duration": 41000000,
    "eval_count": 3,
    "eval_duration": 60000000,
}
STREAM: list[dict[str, Any]] = [
    {
        "model": "llama3.2",
        "created_at": "2026-11-01T10:00:00Z",
        "message": {"role": "assistant", "content": "Hi"},
        "done": False,
    },
    {
        "model": "llama3.2",
        "created_at": "2026-11-01T10:00:01Z",
        "message": {"role": "assistant", "content": " there"},
        "done": False,
    },
    {
        "model": "llama3.2",
        "created_at": "2026-11-01T10:00:02Z",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "total_duration": 812000000,
        "prompt_eval_count": 12,
        "eval_count": 3,
    },
]


def vendor(recorder: Recorder, **config: Any) -> OllamaVendor:
    return OllamaVendor("ollama", VendorConfig(type="ollama", **config), recorder.client())


def lines(*items: dict[str, Any]) -> list[str]:
    return [json.dumps(item) for item in items]


async def test_complete_posts_to_api_chat_without_auth_by_default(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec).complete(make_request(model="llama3.2"))
    assert rec.last.method == "POST"
    assert str(rec.last.url) == f"{LOCAL}/api/chat"
    assert "authorization" not in rec.last.headers
    assert rec.last.headers["content-type"] == "application/json"


async def test_a_configured_key_is_sent_as_bearer_to_a_remote_host(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    remote = vendor(rec, base_url="https://ollama.example.com/", api_key=SecretStr(KEY))
    await remote.complete(make_request())
    assert str(rec.last.url) == "https://ollama.example.com/api/chat"
    assert rec.last.headers["authorization"] == f"Bearer {KEY}"


async def test_options_carry_the_set_knobs_and_stream_false_is_explicit(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    request = make_request(
        messages=[
            Message(role=Role.SYSTEM, content="Be brief."),
            Message(role=Role.USER, content="Hi"),
            Message(role=Role.ASSISTANT, content="Hello."),
            Message(role=Role.USER, content="Again"),
        ],
        temperature=0.2,
        top_p=0.9,
        max_tokens=256,
        stop=["###"],
        user="u-1",
        seed=7,
        response_format={"type": "json_object"},
        extra_body={"keep_alive": "5m"},
    )
    await vendor(rec).complete(request, model="llama3.2")
    assert rec.last_json() == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Again"},
        ],
        "format": "json",
        "options": {
            "temperature": 0.2,
            "num_predict": 256,
            "top_p": 0.9,
            "stop": ["###"],
            "seed": 7,
        },
        "keep_alive": "5m",
        "stream": False,
    }


async def test_unset_knobs_leave_options_out_but_stream_is_still_sent(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    await vendor(rec).complete(make_request(model="llama3.2"))
    assert rec.last_json() == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream": False,
    }


async def test_extra_options_merge_with_ours(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    # (`extra_body` cannot flip `stream` any more: the request refuses it, test_models.)
    rec = recorder(json_response(200, REPLY))
    request = make_request(
        temperature=0.5, extra_body={"options": {"num_ctx": 8192, "min_p": 0.05}}
    )
    response = await vendor(rec).complete(request)
    body = rec.last_json()
    assert body["options"] == {"temperature": 0.5, "num_ctx": 8192, "min_p": 0.05}
    assert body["stream"] is False
    assert response.content == "Hi there"


async def test_complete_parses_text_usage_model_and_finish_reason(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, REPLY))
    response = await vendor(rec).complete(make_request(model="llama3.2"))
    assert response.content == "Hi there"
    assert response.usage == Usage(prompt_tokens=12, completion_tokens=3, total_tokens=15)
    assert response.model == "llama3.2"
    assert response.vendor == "ollama"
    assert response.finish_reason is FinishReason.STOP
    assert response.vendor_finish_reason == "stop"
    assert response.vendor_request_id is None


async def test_a_missing_prompt_count_after_a_cache_hit_is_zero(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    body = {key: value for key, value in REPLY.items() if key != "prompt_eval_count"}
    response = await vendor(recorder(json_response(200, body))).complete(make_request())
    assert response.usage == Usage(prompt_tokens=0, completion_tokens=3, total_tokens=3)


@pytest.mark.parametrize(
    ("done_reason", "message", "expected"),
    [
        ("stop", {"role": "assistant", "content": "Hi"}, ("Hi", FinishReason.STOP)),
        ("length", {"role": "assistant", "content": "Hi"}, ("Hi", FinishReason.LENGTH)),
        ("load", {"role": "assistant", "content": ""}, ("", FinishReason.STOP)),
        ("unload", {"role": "assistant", "content": "stale"}, ("", FinishReason.STOP)),
        (
            "stop",
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": {}}}],
            },
            ("", FinishReason.TOOL_CALLS),
        ),
        ("something_new", {"role": "assistant", "content": "Hi"}, ("Hi", FinishReason.ERROR)),
    ],
    ids=["stop", "length", "load", "unload", "tool_calls", "unknown"],
)
async def test_done_reasons_map_to_the_common_set(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    done_reason: str,
    message: dict[str, Any],
    expected: tuple[str, FinishReason],
) -> None:
    body = {**REPLY, "done_reason": done_reason, "message": message}
    response = await vendor(recorder(json_response(200, body))).complete(make_request())
    assert (response.content, response.finish_reason) == expected
    assert response.vendor_finish_reason == done_reason


async def test_a_200_reply_holding_an_error_is_not_an_answer(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(json_response(200, {"error": "llama runner process has terminated"}))
    with pytest.raises(VendorUnavailable, match="llama runner process has terminated"):
        await vendor(rec).complete(make_request())


async def test_stream_sends_stream_true_and_yields_text_then_the_final_delta(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(ndjson_response(STREAM))
    deltas = [d async for d in vendor(rec).stream(make_request(model="llama3.2", max_tokens=5))]
    body = rec.last_json()
    assert body["stream"] is True
    assert body["options"] == {"num_predict": 5}
    assert "stream_options" not in body
    assert [d.text for d in deltas[:-1]] == ["Hi", " there"]
    final = deltas[-1]
    assert final.finish_reason is FinishReason.STOP
    assert final.vendor_finish_reason == "stop"
    assert final.usage == Usage(prompt_tokens=12, completion_tokens=3, total_tokens=15)
    assert final.model == "llama3.2"


async def test_an_error_line_mid_stream_is_raised_after_the_text_before_it(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(ndjson_response([STREAM[0], {"error": "model runner crashed: out of memory"}]))
    received: list[str] = []

    async def consume() -> None:
        async for delta in vendor(rec).stream(make_request()):
            received.append(delta.text)

    with pytest.raises(VendorUnavailable, match="out of memory") as caught:
        await consume()
    assert received == ["Hi"]
    assert isinstance(caught.value, StreamBroken)
    assert caught.value.partial is True
    assert caught.value.retryable is True
    assert caught.value.vendor == "ollama"


async def test_a_stream_without_a_done_line_is_broken(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(ndjson_response(STREAM[:2]))
    with pytest.raises(StreamBroken, match="done: true") as caught:
        _ = [d async for d in vendor(rec).stream(make_request())]
    assert caught.value.partial is True


async def test_a_connection_cut_mid_stream_is_a_broken_stream(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    half = (json.dumps(STREAM[0]) + "\n").encode()
    response = cut_off_response(half, content_type="application/x-ndjson")
    received: list[str] = []

    async def consume() -> None:
        async for delta in vendor(recorder(response)).stream(make_request()):
            received.append(delta.text)

    with pytest.raises(StreamBroken) as caught:
        await consume()
    assert received == ["Hi"]
    assert caught.value.partial is True


def test_parser_checks_every_line_for_an_error_even_the_first() -> None:
    parser = ChatNdjsonParser("ollama")
    with pytest.raises(StreamBroken, match="server busy") as caught:
        parser.feed(json.dumps({"error": "server busy, please try again"}))
    assert caught.value.partial is False


def test_parser_collects_tool_calls_and_reports_them_as_the_finish_reason() -> None:
    tool_line = {
        "model": "llama3.2",
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
        },
        "done": False,
    }
    done = {**STREAM[2], "done_reason": "stop"}
    deltas = feed_all(ChatNdjsonParser("ollama"), lines(tool_line, done))
    assert [d.text for d in deltas] == [""]
    assert deltas[-1].finish_reason is FinishReason.TOOL_CALLS
    assert deltas[-1].vendor_finish_reason == "stop"


def test_parser_maps_length_reads_a_cached_count_and_ignores_unknown_fields() -> None:
    done = {
        **STREAM[2],
        "done_reason": "length",
        "prompt_eval_cached_count": 4,
        "brand_new_field": {"x": 1},
    }
    deltas = feed_all(ChatNdjsonParser("ollama"), lines(STREAM[0], done))
    assert [d.text for d in deltas] == ["Hi", ""]
    assert deltas[-1].finish_reason is FinishReason.LENGTH
    assert deltas[-1].usage == Usage(
        prompt_tokens=12, completion_tokens=3, total_tokens=15, cached_prompt_tokens=4
    )


def test_parser_without_counts_on_the_done_line_reports_zero_usage() -> None:
    done = {"model": "llama3.2", "message": {"role": "assistant", "content": ""}, "done": True}
    deltas = feed_all(ChatNdjsonParser("ollama"), lines(done))
    assert deltas[-1].usage == Usage()
    assert deltas[-1].finish_reason is FinishReason.STOP
    assert deltas[-1].vendor_finish_reason is None


def error_body(status: int, text: str) -> httpx.Response:
    return json_response(status, {"error": text})


# Real error bodies and the typed error each must become: checked, with every other
# format's, by tests/unit/vendors/test_wire_contract.py.
ERRORS = [
    (error_body(400, "invalid options: num_predict must be an integer"), InvalidRequest),
    (error_body(404, 'model "llama9" not found, try pulling it first'), InvalidRequest),
    (error_body(429, "too many requests"), VendorRateLimited),
    (error_body(500, "llama runner process has terminated: exit status 2"), VendorUnavailable),
    (error_body(502, "cloud model unreachable"), VendorUnavailable),
    (
        error_body(503, "server busy, please try again. maximum pending requests exceeded"),
        VendorUnavailable,
    ),
    (error_body(401, f"unauthorized: key {KEY} is not valid"), VendorAuthError),
    (error_body(403, f"forbidden: key {KEY} lacks access"), VendorAuthError),
]


@pytest.mark.parametrize(("response", "expected"), ERRORS, ids=lambda v: getattr(v, "__name__", ""))
async def test_an_errors_own_words_survive_up_to_the_first_detail(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    response: httpx.Response,
    expected: type[Exception],
) -> None:
    with pytest.raises(expected) as caught:
        await vendor(recorder(response), api_key=SecretStr(KEY)).complete(make_request())
    # Ollama's errors are one string; past its first colon may come a detail with the key.
    assert json.loads(response.content)["error"].split(":")[0] in str(caught.value)


async def test_a_404_for_a_model_not_pulled_says_how_to_pull_it(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    response, _ = ERRORS[1]
    with pytest.raises(InvalidRequest, match="ollama pull") as caught:
        await vendor(recorder(response)).complete(make_request(model="llama9"))
    assert 'model "llama9" not found' in str(caught.value)
    assert caught.value.retryable is False


async def test_a_plain_text_error_body_is_classified_by_status(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    rec = recorder(httpx.Response(502, text="<html><body>502 Bad Gateway</body></html>"))
    with pytest.raises(VendorUnavailable, match="502 Bad Gateway") as caught:
        await vendor(rec).complete(make_request())
    assert caught.value.status_code == 502


async def test_errors_before_a_stream_starts_are_typed_too(
    recorder: Callable[..., Recorder], make_request: Callable[..., Request]
) -> None:
    response, _ = ERRORS[1]
    with pytest.raises(InvalidRequest, match="ollama pull"):
        _ = [d async for d in vendor(recorder(response)).stream(make_request())]


async def test_a_refused_connection_is_retryable(make_request: Callable[..., Request]) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(refused))
    with pytest.raises(VendorUnavailable) as caught:
        await OllamaVendor("ollama", VendorConfig(type="ollama"), client).complete(make_request())
    assert caught.value.retryable is True


async def test_health_check_lists_local_models_without_auth(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(json_response(200, {"models": []}))
    health = await vendor(rec).health_check()
    assert rec.last.method == "GET"
    assert str(rec.last.url) == f"{LOCAL}/api/tags"
    assert "authorization" not in rec.last.headers
    assert health.status is HealthStatus.HEALTHY


async def test_health_check_sends_the_key_and_reports_busy_as_degraded(
    recorder: Callable[..., Recorder],
) -> None:
    rec = recorder(error_body(503, "server busy"))
    health = await vendor(rec, api_key=SecretStr(KEY)).health_check()
    assert rec.last.headers["authorization"] == f"Bearer {KEY}"
    assert health.status is HealthStatus.DEGRADED
    bad = await vendor(recorder(ERRORS[6][0]), api_key=SecretStr(KEY)).health_check()
    assert bad.status is HealthStatus.UNHEALTHY
    assert KEY not in bad.detail
