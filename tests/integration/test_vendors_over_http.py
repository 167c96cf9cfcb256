"""Every vendor client against a stand-in speaking that vendor's wire format, over loopback,
through the worker's own HTTP client (`workers.http_transport.vendor_http_client`)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from dispatcher import (
    FinishReason,
    HealthStatus,
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
from dispatcher.vendors import Vendor, build_vendor
from producer.cli.tools.standin import StandInOptions, StandInServer
from tests.standins.server import ThreadedServer, standin_server
from workers.http_transport import vendor_http_client

pytestmark = pytest.mark.integration

KEY = "sk-standin-key-0123456789abcdef"
# (vendor name, config fields relative to the stand-in's URL, model to ask for)
VENDORS: dict[str, tuple[dict[str, Any], str, str]] = {
    "openai": ({"type": "openai", "base_url": "{url}/v1"}, "gpt-4o-mini", "authorization"),
    "azure": ({"type": "azure", "base_url": "{url}"}, "my-gpt4o-deployment", "api-key"),
    "azure-v1": (
        {"type": "azure", "base_url": "{url}/openai/v1"},
        "my-gpt4o-deployment",
        "api-key",
    ),
    "anthropic": (
        {"type": "anthropic", "base_url": "{url}"},
        "claude-3-5-haiku-latest",
        "x-api-key",
    ),
    "gemini": ({"type": "gemini", "base_url": "{url}"}, "gemini-2.0-flash", "x-goog-api-key"),
    "ollama": ({"type": "ollama", "base_url": "{url}"}, "llama3.2", ""),
    "cohere": ({"type": "cohere", "base_url": "{url}"}, "command-r", "authorization"),
    "compatible": (
        {"type": "openai_compatible", "base_url": "{url}/v1"},
        "qwen2.5",
        "authorization",
    ),
    "bedrock": (
        {"type": "bedrock", "base_url": "{url}", "region": "us-east-1"},
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "authorization",
    ),
}
# Vendors that send no wait with a 429 (AWS's SDKs back off on their own).
NO_WAIT_HINT = ("ollama", "bedrock")
PROMPT = [
    Message(role="system", content="Be brief."),
    Message(role="user", content="hello there world"),
]
REPLY = "echo: hello there world"


@pytest.fixture(scope="module")
def standin() -> Iterator[ThreadedServer]:
    with standin_server() as server:
        yield server


def _received(server: ThreadedServer) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{server.url}/__requests", timeout=10) as answer:  # noqa: S310
        data: list[dict[str, Any]] = json.load(answer)
        return data


@pytest.fixture
async def make_vendor(standin: ThreadedServer) -> AsyncIterator[Any]:
    made: list[Vendor] = []
    clients: list[httpx.AsyncClient] = []

    def build(
        name: str, *, fault: str = "", key: str = KEY, url: str = "", **overrides: Any
    ) -> Vendor:
        """A vendor of wire format `name` on the stand-in (or the one at `url`)."""
        fields, _, _ = VENDORS[name]
        config = {
            k: (v.format(url=url or standin.url) if isinstance(v, str) else v)
            for k, v in fields.items()
        }
        config.update(api_key=SecretStr(key), **overrides)
        if fault:
            config["headers"] = {"x-fake-fault": fault}
        built = VendorConfig(**config)
        # The worker's own HTTP client (aiohttp underneath), as `workers.runtime` builds it.
        client = vendor_http_client(built)
        clients.append(client)
        vendor = build_vendor(name, built, client)
        made.append(vendor)
        return vendor

    yield build
    for vendor in made:
        await vendor.aclose()
    for client in clients:
        await client.aclose()


def _request(name: str, **fields: Any) -> Request:
    return Request(model=VENDORS[name][1], messages=PROMPT, **fields)


@pytest.mark.parametrize("name", VENDORS)
async def test_complete_returns_the_exact_reply_and_usage(
    name: str, make_vendor: Any, standin: ThreadedServer
) -> None:
    response = await make_vendor(name).complete(_request(name))
    assert response.content == REPLY
    assert response.usage == Usage(prompt_tokens=5, completion_tokens=4, total_tokens=9)
    assert response.finish_reason is FinishReason.STOP
    assert response.vendor == name
    sent = _received(standin)[-1]
    header = VENDORS[name][2]
    if header:
        assert KEY in sent["headers"][header]
    assert KEY not in json.dumps(sent["body"])


@pytest.mark.parametrize("name", VENDORS)
async def test_stream_reassembles_the_exact_reply_with_usage(name: str, make_vendor: Any) -> None:
    deltas = [d async for d in make_vendor(name).stream(_request(name, stream=True))]
    assert "".join(d.text for d in deltas) == REPLY
    assert len([d for d in deltas if d.text]) == 4  # one event per word
    final = deltas[-1]
    assert final.finish_reason is FinishReason.STOP
    assert final.usage is not None
    assert final.usage.completion_tokens == 4


@pytest.mark.parametrize("name", VENDORS)
async def test_max_tokens_truncates_with_the_length_reason(name: str, make_vendor: Any) -> None:
    vendor = make_vendor(name)
    response = await vendor.complete(_request(name, max_tokens=2))
    assert response.content == "echo: hello"
    assert response.finish_reason is FinishReason.LENGTH
    deltas = [d async for d in vendor.stream(_request(name, max_tokens=2))]
    assert "".join(d.text for d in deltas) == "echo: hello"
    assert deltas[-1].finish_reason is FinishReason.LENGTH


@pytest.mark.parametrize("name", VENDORS)
async def test_rate_limits_carry_the_vendors_wait(name: str, make_vendor: Any) -> None:
    with pytest.raises(VendorRateLimited) as caught:
        await make_vendor(name, fault="429").complete(_request(name))
    if name not in NO_WAIT_HINT:
        assert caught.value.retry_after_s == 1.0
    assert KEY not in str(caught.value)


@pytest.mark.parametrize("name", VENDORS)
async def test_server_errors_are_retryable(name: str, make_vendor: Any) -> None:
    with pytest.raises(VendorUnavailable) as caught:
        await make_vendor(name, fault="500").complete(_request(name))
    assert caught.value.retryable


@pytest.mark.parametrize("name", [n for n in VENDORS if n != "ollama"])
async def test_a_rejected_key_is_an_auth_error_that_never_shows_the_key(
    name: str, make_vendor: Any
) -> None:
    with pytest.raises(VendorAuthError) as caught:
        await make_vendor(name, fault="401").complete(_request(name))
    assert not caught.value.retryable
    assert KEY not in str(caught.value)


@pytest.mark.parametrize("name", VENDORS)
async def test_a_stream_dropped_midway_is_broken_not_finished(name: str, make_vendor: Any) -> None:
    received: list[str] = []

    async def consume() -> None:
        async for delta in make_vendor(name, fault="midstream-drop").stream(_request(name)):
            received.append(delta.text)

    with pytest.raises(StreamBroken) as caught:
        await consume()
    assert caught.value.retryable
    assert "".join(received) != REPLY


@pytest.mark.parametrize("name", VENDORS)
async def test_an_error_inside_a_stream_is_raised_as_retryable(name: str, make_vendor: Any) -> None:
    with pytest.raises(VendorUnavailable) as caught:
        _ = [d async for d in make_vendor(name, fault="midstream-error").stream(_request(name))]
    assert caught.value.retryable


@pytest.mark.parametrize("name", ["openai", "anthropic", "gemini", "ollama", "bedrock"])
async def test_a_stalled_stream_times_out_as_a_broken_stream(name: str, make_vendor: Any) -> None:
    vendor = make_vendor(name, fault="stall:2000", timeout_s=0.5)
    with pytest.raises(StreamBroken, match="stall"):
        _ = [d async for d in vendor.stream(_request(name))]


@pytest.mark.parametrize("name", VENDORS)
async def test_health_check_reaches_the_vendor(name: str, make_vendor: Any) -> None:
    health = await make_vendor(name).health_check()
    assert health.status is HealthStatus.HEALTHY
    assert health.latency_ms is not None


@pytest.mark.parametrize("name", [n for n in VENDORS if n not in ("ollama", "bedrock")])
async def test_a_quota_fault_is_final_in_every_format(name: str, make_vendor: Any) -> None:
    with pytest.raises(VendorQuotaExceeded) as caught:
        await make_vendor(name, fault="quota").complete(_request(name))
    assert not caught.value.retryable


async def test_bedrock_service_quota_exceeded_is_a_rate_limit_though_aws_sends_400(
    make_vendor: Any,
) -> None:
    # ServiceQuotaExceededException: a per-minute quota of the account, retried later.
    with pytest.raises(VendorRateLimited, match="ServiceQuotaExceededException") as caught:
        await make_vendor("bedrock", fault="quota").complete(_request("bedrock"))
    assert caught.value.retryable


@pytest.mark.parametrize("name", VENDORS)
async def test_a_timeout_fault_outlasts_the_client_timeout(name: str, make_vendor: Any) -> None:
    with pytest.raises(VendorTimeout):
        await make_vendor(name, fault="timeout", timeout_s=0.3).complete(_request(name))


@pytest.mark.parametrize("name", [n for n in VENDORS if n != "ollama"])
async def test_a_server_started_with_a_key_checks_it_in_every_format(
    name: str, make_vendor: Any
) -> None:
    async with StandInServer(StandInOptions(api_key=SecretStr(KEY))) as keyed:
        right = await make_vendor(name, url=keyed.root_url).complete(_request(name))
        with pytest.raises(VendorAuthError) as caught:
            await make_vendor(name, url=keyed.root_url, key="sk-wrong-0000").complete(
                _request(name)
            )
    assert right.content == REPLY
    assert not caught.value.retryable
