"""The stand-in vendor server over real loopback HTTP in OpenAI's format, called by our real
`OpenAIVendor`; and `llmdispatch mock-server`, which serves it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from dispatcher import (
    FinishReason,
    HealthStatus,
    Message,
    Request,
    StreamBroken,
    VendorAuthError,
    VendorConfig,
    VendorQuotaExceeded,
    VendorRateLimited,
    VendorTimeout,
    VendorUnavailable,
)
from dispatcher.errors import DispatcherError
from dispatcher.vendors.base import StreamDelta
from dispatcher.vendors.mock import MockBehaviour
from dispatcher.vendors.openai import OpenAIVendor
from producer.cli.root import app
from producer.cli.tools.standin import StandInOptions, StandInServer, parse_fault

pytestmark = pytest.mark.integration

KEY = "sk-mock-server-test-0123456789"
SCRIPT = Path(sys.executable).parent / "llmdispatch"
# Generous bounds for a loaded CI machine; each wait ends as soon as its condition holds.
STARTUP_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 15.0

VendorFactory = Callable[..., OpenAIVendor]


@pytest.fixture
async def server() -> AsyncIterator[StandInServer]:
    """A stand-in server on a free port that expects KEY and answers 429s with retry-after 2.5."""
    options = StandInOptions(api_key=SecretStr(KEY), behaviour=MockBehaviour(retry_after_s=2.5))
    async with StandInServer(options) as running:
        yield running


@pytest.fixture
async def make_vendor(server: StandInServer) -> AsyncIterator[VendorFactory]:
    """make_vendor(key=..., fault=..., timeout_s=...) -> an OpenAIVendor pointed at `server`."""
    vendors: list[OpenAIVendor] = []

    def build(
        *, key: str = KEY, fault: str | None = None, timeout_s: float | None = None
    ) -> OpenAIVendor:
        config = VendorConfig(
            type="openai",
            base_url=server.url,
            api_key=SecretStr(key),
            headers={"x-fake-fault": fault} if fault else {},
            timeout_s=timeout_s,
        )
        vendor = OpenAIVendor("mockserver", config)
        vendors.append(vendor)
        return vendor

    yield build
    for vendor in vendors:
        await vendor.aclose()


async def collect(vendor: OpenAIVendor, request: Request) -> list[StreamDelta]:
    return [delta async for delta in vendor.stream(request)]


async def collect_until_error(
    vendor: OpenAIVendor, request: Request
) -> tuple[list[str], DispatcherError]:
    """The texts a stream delivered before it failed, and the error."""
    received: list[str] = []
    try:
        async for delta in vendor.stream(request):
            received.append(delta.text)
    except DispatcherError as exc:
        return received, exc
    pytest.fail("the stream finished without failing")


# --- replies ------------------------------------------------------------------------


async def test_complete_over_http_gives_the_predictable_reply(
    make_vendor: VendorFactory, make_request: Callable[..., Request]
) -> None:
    response = await make_vendor().complete(make_request())
    assert response.content == "echo: Say hello."
    assert response.finish_reason == FinishReason.STOP
    assert response.model == "gpt-4o-mini"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (2, 3)
    assert response.usage.total_tokens == 5
    assert response.vendor_request_id is not None
    assert response.vendor_request_id.startswith("req_standin_")


async def test_stream_over_http_reassembles_the_exact_text_with_usage(
    make_vendor: VendorFactory, make_request: Callable[..., Request]
) -> None:
    request = make_request(
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content="  tabs\tand\nnewlines stay "),
        ]
    )
    *texts, final = await collect(make_vendor(), request)
    assert [delta.text for delta in texts] == ["echo:", "   tabs", "\tand", "\nnewlines", " stay "]
    assert "".join(delta.text for delta in texts) == "echo:   tabs\tand\nnewlines stay "
    assert final.finish_reason == FinishReason.STOP
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (2 + 4, 5)
    assert final.model == "gpt-4o-mini"


async def test_max_tokens_over_http_truncates_with_finish_length(
    make_vendor: VendorFactory, make_request: Callable[..., Request]
) -> None:
    vendor = make_vendor()
    response = await vendor.complete(make_request(max_tokens=2))
    assert (response.content, response.finish_reason) == ("echo: Say", FinishReason.LENGTH)
    *texts, final = await collect(vendor, make_request(max_tokens=2))
    assert "".join(delta.text for delta in texts) == "echo: Say"
    assert final.finish_reason == FinishReason.LENGTH
    assert final.usage is not None
    assert final.usage.completion_tokens == 2


async def test_health_check_lists_models_and_reports_healthy(make_vendor: VendorFactory) -> None:
    health = await make_vendor().health_check()
    assert health.status == HealthStatus.HEALTHY


async def test_a_hundred_concurrent_paced_streams_each_get_their_own_reply(
    make_request: Callable[..., Request],
) -> None:
    options = StandInOptions(behaviour=MockBehaviour(chunk_delay_s=0.02))
    requests = [
        make_request(messages=[Message(role="user", content=f"stream number {n}")])
        for n in range(100)
    ]
    async with StandInServer(options) as paced:
        vendor = OpenAIVendor("paced", VendorConfig(type="openai", base_url=paced.url))
        try:
            results = await asyncio.gather(*(collect(vendor, request) for request in requests))
        finally:
            await vendor.aclose()
    texts = ["".join(delta.text for delta in deltas) for deltas in results]
    assert texts == [f"echo: stream number {n}" for n in range(100)]


# --- auth and injected faults --------------------------------------------------------


async def test_wrong_key_is_401_auth_error(
    make_vendor: VendorFactory, make_request: Callable[..., Request]
) -> None:
    with pytest.raises(VendorAuthError) as caught:
        await make_vendor(key="sk-wrong-key-0000000000").complete(make_request())
    assert caught.value.status_code == 401
    assert "Incorrect API key" in caught.value.message


async def test_missing_key_is_401(server: StandInServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{server.url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
        health = await client.get(f"{server.root_url}/health")
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert health.status_code == 200


async def test_fault_429_is_rate_limited_with_the_servers_retry_after(
    make_vendor: VendorFactory, make_request: Callable[..., Request]
) -> None:
    vendor = make_vendor(fault="429")
    for call in (vendor.complete(make_request()), collect(vendor, make_request())):
        with pytest.raises(VendorRateLimited) as caught:
            await call
        assert caught.value.retry_after_s == 2.5


async def test_fault_quota_is_final(
    make_vendor: VendorFactory, make_request: Callable[..., Request]
) -> None:
    with pytest.raises(VendorQuotaExceeded):
        await make_vendor(fault="quota").complete(make_request())


async def test_fault_500_is_unavailable(
    make_vendor: VendorFactory, make_request: Callable[..., Request]
) -> None:
    vendor = make_vendor(fault="500")
    for call in (vendor.complete(make_request()), collect(vendor, make_request())):
        with pytest.raises(VendorUnavailable) as caught:
            await call
        assert caught.value.status_code == 500
        assert not isinstance(caught.value, StreamBroken)


async def test_fault_midstream_drop_breaks_the_stream_partway(
    make_vendor: VendorFactory, make_request: Callable[..., Request]
) -> None:
    request = make_request(messages=[Message(role="user", content="one two three four five")])
    received, error = await collect_until_error(make_vendor(fault="midstream-drop"), request)
    assert isinstance(error, StreamBroken)
    assert error.partial
    assert received == ["echo:", " one", " two"]


async def test_fault_midstream_drop_of_a_whole_reply_is_unavailable(
    make_vendor: VendorFactory, make_request: Callable[..., Request]
) -> None:
    with pytest.raises(VendorUnavailable):
        await make_vendor(fault="midstream-drop").complete(make_request())


async def test_fault_midstream_error_is_an_error_inside_the_stream(
    make_vendor: VendorFactory, make_request: Callable[..., Request]
) -> None:
    received, error = await collect_until_error(
        make_vendor(fault="midstream-error"), make_request()
    )
    assert isinstance(error, VendorUnavailable)
    assert "injected by x-fake-fault" in error.message
    assert received == ["echo:"]


async def test_fault_timeout_hangs_past_the_client_timeout(
    make_vendor: VendorFactory, make_request: Callable[..., Request]
) -> None:
    with pytest.raises(VendorTimeout):
        await make_vendor(fault="timeout", timeout_s=0.3).complete(make_request())


async def test_unknown_fault_is_a_400_naming_the_accepted_values(server: StandInServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{server.url}/chat/completions",
            headers={"Authorization": f"Bearer {KEY}", "x-fake-fault": "meltdown"},
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.status_code == 400
    assert "midstream-drop" in response.json()["error"]["message"]


def test_faults_combine_and_read_milliseconds() -> None:
    fault = parse_fault("slow:250, 503")
    assert fault is not None
    assert (fault.slow_s, fault.status) == (0.25, 503)
    assert parse_fault("") is None
    with pytest.raises(ValueError, match="milliseconds"):
        parse_fault("stall:soon")


async def test_server_wide_failure_rate_fails_requests_without_a_fault_header(
    make_request: Callable[..., Request],
) -> None:
    behaviour = MockBehaviour(failure_rate=1.0, failure_kinds=frozenset({"server_error"}))
    async with StandInServer(StandInOptions(behaviour=behaviour)) as failing:
        vendor = OpenAIVendor("failing", VendorConfig(type="openai", base_url=failing.url))
        try:
            with pytest.raises(VendorUnavailable):
                await vendor.complete(make_request())
        finally:
            await vendor.aclose()


# --- the console script ---------------------------------------------------------------


def test_mock_server_help_explains_the_options_and_the_fault_header() -> None:
    result = CliRunner().invoke(app, ["mock-server", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for text in ("--latency", "--chunk-delay", "--failure-rate", "--api-key", "x-fake-fault"):
        assert text in result.output


def test_mock_server_refuses_an_unknown_failure_kind_with_exit_2() -> None:
    result = CliRunner().invoke(
        app, ["mock-server", "--failure-rate", "0.1", "--failure-kinds", "meltdown"]
    )
    assert result.exit_code == 2
    assert "failure_kinds" in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_healthy(process: subprocess.Popen[str], url: str) -> None:
    """Poll GET /health until it answers 200; fail early if the process exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mock-server exited with {process.returncode} before it was healthy")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"mock-server was not healthy within {STARTUP_TIMEOUT_S:g} s")


@pytest.fixture
def console_server() -> Iterator[str]:
    """`llmdispatch mock-server` as a real process on a free port; yields its base URL."""
    port = _free_port()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "")}
    process = subprocess.Popen(
        [str(SCRIPT), "mock-server", "--port", str(port), "--api-key", KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        _wait_until_healthy(process, f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            stdout, stderr = process.communicate(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    assert process.returncode == 0, stderr
    assert f"listening on http://127.0.0.1:{port}/v1" in stdout


async def test_console_script_serves_a_completion(
    console_server: str, make_request: Callable[..., Request]
) -> None:
    config = VendorConfig(type="openai", base_url=console_server, api_key=SecretStr(KEY))
    vendor = OpenAIVendor("console", config)
    try:
        response = await vendor.complete(make_request())
    finally:
        await vendor.aclose()
    assert response.content == "echo: Say hello."
