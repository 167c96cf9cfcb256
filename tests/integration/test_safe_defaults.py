"""Safe defaults an operator can trust, with real workers and vendors over HTTP.

A stand-in vendor (the mock) never answers a real vendor's traffic; a vendor's
health says why it is refused; a server with no model list stays routable; a
vendor that never completes the TCP handshake fails its attempt within the
connect timeout; `config check --ping` and `health check` tell a deploy script
what is wrong.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import NoRoute, Request, VendorUnavailable
from dispatcher.models import HealthStatus, JobEventKind, JobStatus
from producer import Client
from tests.integration.stack import Stack, running_stack, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_CONFIG = ROOT / "deploy" / "llmdispatch.yaml"
LLMDISPATCH = Path(sys.executable).parent / "llmdispatch"
KEY = "sk-safe-defaults-0123456789abcdef"
HI = [{"role": "user", "content": "hello there"}]
QUEUES = ["llm.openai", "llm.mock", "llm.mockhttp", "llm.backup"]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        yield running


def http_vendor(kind: str, name: str, models: list[str], **extra: Any) -> dict[str, Any]:
    """A vendor at the stand-in, tagged `x-vendor: <name>` so its calls can be told apart."""
    headers = {"x-vendor": name, **extra.pop("headers", {})}
    return {
        "type": kind,
        "base_url": "{url}/v1",
        "models": models,
        "api_key": "${OPENAI_API_KEY}",
        "timeout_s": 5,
        "headers": headers,
        **extra,
    }


def with_stand_ins(stack: Stack, **extra: Any) -> Client:
    """A real `openai` failing with 500s, a mock in process and a mock server, both `*`.

    `extra` adds top-level configuration; its `vendors` join these three.
    """
    vendors = {
        "openai": http_vendor("openai", "openai", ["gpt-*"], headers={"x-fake-fault": "500"}),
        "mock": {"type": "mock", "models": ["*"]},
        "mockhttp": http_vendor("openai_compatible", "mockhttp", ["*"], stand_in=True),
        **extra.pop("vendors", {}),
    }
    config = {
        "vendors": vendors,
        "retry_policy": {"max_retries": 1, "backoff": "fixed", "initial_delay_s": 0.1},
        **extra,
    }
    stack.configure(config, OPENAI_API_KEY=KEY, LLMDISPATCH_HEALTH_CHECK_INTERVAL_S="0")
    with stack.environment():
        return Client.from_env()


def calls_to(stack: Stack, vendor: str) -> list[dict[str, Any]]:
    return [call for call in stack.received() if call["headers"].get("x-vendor") == vendor]


# --- 1. fallbacks only where configured -------------------------------------------------------


def test_a_real_vendor_failing_500s_fails_its_job_and_never_reaches_a_stand_in(
    stack: Stack,
) -> None:
    client = with_stand_ins(stack)
    stack.start_worker(QUEUES)  # a worker holds the mocks too: routing alone keeps them out

    job_id = client.submit(Request(model="gpt-4o-mini", messages=HI))
    with pytest.raises(VendorUnavailable):
        client.wait(job_id, timeout_s=60)

    record = client.get(job_id)
    assert record.status is JobStatus.FAILED
    assert record.route is not None
    assert (record.route.vendor, record.route.fallbacks) == ("openai", [])
    assert len(calls_to(stack, "openai")) == 2, "the first try and its one retry"
    assert calls_to(stack, "mockhttp") == []
    assert "mock" not in client.stats().vendor_stats


def test_a_job_falls_back_to_the_configured_fallback_vendor_and_no_further(stack: Stack) -> None:
    backup = http_vendor("openai_compatible", "backup", ["*"])
    client = with_stand_ins(stack, vendors={"backup": backup}, fallback_vendor="backup")
    stack.start_worker(QUEUES)

    reply = client.send(Request(model="gpt-4o-mini", messages=HI), timeout_s=60)

    assert (reply.vendor, reply.content) == ("backup", "echo: hello there")
    assert calls_to(stack, "mockhttp") == []
    assert "mock" not in client.stats().vendor_stats


def test_the_shipped_deploy_config_with_real_vendors_on_never_answers_from_a_mock(
    stack: Stack,
) -> None:
    stack.configure({})
    stack.env.update(
        LLMDISPATCH_CONFIG=str(DEPLOY_CONFIG),
        LLMDISPATCH_HEALTH_CHECK_INTERVAL_S="0",
        OPENAI_ENABLED="true",
        ANTHROPIC_ENABLED="true",
        OPENAI_API_KEY=KEY,
        ANTHROPIC_API_KEY=KEY,
        OPENAI_BASE_URL=f"{stack.standin.url}/v1",
        ANTHROPIC_BASE_URL=stack.standin.url,
        MOCK_VENDOR_URL=f"{stack.standin.url}/v1",
        MOCK_API_KEY="mock-key-for-the-test",
    )
    with stack.environment():
        client = Client.from_env()
    stack.start_worker(["llm.openai", "llm.anthropic", "llm.mock", "llm.mockhttp"])

    # OpenAI works: its traffic is its own.
    assert client.send(Request(model="gpt-4o-mini", messages=HI), timeout_s=60).vendor == "openai"
    # OpenAI fails: the job fails; no mock answers in its place.
    failing = [{"role": "user", "content": "hello [fault:500 outage]"}]
    job_id = client.submit(Request(model="gpt-4o-mini", messages=failing))
    with pytest.raises(VendorUnavailable):
        client.wait(job_id, timeout_s=60)
    # A model no real vendor serves (a typo): refused at once, never echoed.
    with pytest.raises(NoRoute, match="a stand-in vendor"):
        client.submit(Request(model="gpt4o-mini-typo", messages=HI))

    mock_key_calls = [
        call
        for call in stack.received()
        if call["headers"].get("authorization") == "Bearer mock-key-for-the-test"
    ]
    assert mock_key_calls == []
    assert set(client.stats().vendor_stats) == {"openai"}


# --- 2. health that says why ------------------------------------------------------------------


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LLMDISPATCH), *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_vendor(stack: Stack, **env: str) -> Client:
    env = {"LLMDISPATCH_HEALTH_CHECK_INTERVAL_S": "0.5", **env}
    stack.configure(
        {"vendors": {"openai": http_vendor("openai", "openai", ["gpt-*"])}},
        OPENAI_API_KEY=KEY,
        **env,
    )
    with stack.environment():
        return Client.from_env()


def models_answer(stack: Stack, status: int, vendor: str = "openai") -> None:
    """From now on the stand-in's model lists answer `status` to `vendor`'s probes."""
    url = f"{stack.standin.url}/__models_status/{status}?x-vendor={vendor}"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10):  # noqa: S310
        pass


def test_a_key_the_vendor_refuses_is_named_by_send_status_and_the_worker_log(
    stack: Stack,
) -> None:
    client = one_vendor(stack)
    models_answer(stack, 401)
    worker = stack.start_worker(["llm.openai"])

    def probed(times: int) -> bool:
        [status] = client.vendor_status()
        seen.add(status.health_checked_at)
        return status.health is HealthStatus.UNHEALTHY and len(seen) > times

    seen: set[Any] = set()
    wait_for(lambda: probed(3), 60, "three probes to find the key refused")

    with pytest.raises(NoRoute) as caught:
        client.send(Request(model="gpt-4o-mini", messages=HI), timeout_s=10)
    message = str(caught.value)
    assert "openai: unhealthy: HTTP 401 from its health check, check OPENAI_API_KEY" in message
    assert KEY not in message

    status = cli(stack, "status")
    assert "openai: unhealthy: HTTP 401 from its health check, check OPENAI_API_KEY" in (
        status.stdout
    ), status.stdout + status.stderr

    warnings = [
        line
        for line in worker.log_text().splitlines()
        if "WARNING" in line and "vendor openai: unhealthy: HTTP 401" in line
    ]
    assert len(warnings) == 1, warnings


def test_a_server_with_no_model_list_stays_routable(stack: Stack) -> None:
    client = one_vendor(stack)
    models_answer(stack, 404)
    stack.start_worker(["llm.openai"])

    def probed() -> Any:
        [status] = client.vendor_status()
        return status.health_checked_at is not None and status

    status = wait_for(probed, 60, "a probe of the vendor")
    assert status.health is HealthStatus.UNKNOWN
    assert "no model list at GET /v1/models (HTTP 404)" in status.health_detail

    reply = client.send(Request(model="gpt-4o-mini", messages=HI), timeout_s=60)
    assert reply.content == "echo: hello there"


# --- 4. connect timeouts ---------------------------------------------------------------------


@pytest.fixture
def handshake_never_completes() -> Iterator[int]:
    """A port whose listen queue is full: the kernel drops new SYNs, connects hang."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    probe = socket.socket()
    probe.settimeout(1.0)
    with pytest.raises(TimeoutError):  # the premise: a connect to it hangs
        probe.connect(("127.0.0.1", port))
    probe.close()
    yield port
    for sock in [*fillers, server]:
        sock.close()


def test_a_vendor_that_never_completes_the_handshake_fails_the_attempt_within_the_connect_timeout(
    stack: Stack, handshake_never_completes: int
) -> None:
    vendor = {
        "type": "openai",
        "base_url": f"http://127.0.0.1:{handshake_never_completes}/v1",
        "api_key": KEY,
        "timeout_s": 60,
        "connect_timeout_s": 2,
    }
    stack.configure(
        {"vendors": {"openai": vendor}, "retry_policy": {"max_retries": 0}},
        LLMDISPATCH_HEALTH_CHECK_INTERVAL_S="0",
    )
    with stack.environment():
        client = Client.from_env()
    stack.start_worker(["llm.openai"])

    job_id = client.submit(Request(model="gpt-4o-mini", messages=HI))
    with pytest.raises(VendorUnavailable, match="could not connect within 2 s"):
        client.wait(job_id, timeout_s=60)

    events = client.get(job_id).events
    started = next(e.at for e in events if e.kind is JobEventKind.STARTED)
    failed = next(e.at for e in events if e.kind is JobEventKind.FAILED)
    assert (failed - started).total_seconds() < 2 + 1, "the connect timeout, not the 60 s one"


# --- 3. config check --ping and health check -------------------------------------------------


def test_config_check_ping_reports_a_refused_key_and_exits_3(stack: Stack) -> None:
    one_vendor(stack).close()
    models_answer(stack, 401)

    result = cli(stack, "config", "check", "--ping")

    assert result.returncode == 3, result.stdout + result.stderr
    assert "answers" in result.stdout
    assert "HTTP 401 from its health check, check OPENAI_API_KEY" in result.stdout
    assert KEY not in result.stdout + result.stderr


def test_config_check_ping_passes_when_redis_and_every_vendor_answer(stack: Stack) -> None:
    one_vendor(stack).close()

    result = cli(stack, "config", "check", "--ping")

    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"openai\s+healthy", result.stdout), result.stdout


def test_config_check_ping_exits_6_when_redis_does_not_answer(stack: Stack) -> None:
    one_vendor(stack, REDIS_URL="redis://127.0.0.1:1/0").close()
    stack.env["REDIS_URL"] = "redis://127.0.0.1:1/0"

    result = cli(stack, "config", "check", "--ping")

    assert result.returncode == 6, result.stdout + result.stderr
    assert "redis: no answer from redis://127.0.0.1:1/0" in result.stderr


def test_health_check_probes_now_and_producers_route_by_what_it_found(stack: Stack) -> None:
    client = one_vendor(stack, LLMDISPATCH_HEALTH_CHECK_INTERVAL_S="0")  # no worker probes
    models_answer(stack, 401)

    result = cli(stack, "health", "check", "openai")

    assert result.returncode == 3, result.stdout + result.stderr
    assert re.search(r"openai\s+unhealthy .*check OPENAI_API_KEY", result.stdout), result.stdout
    with pytest.raises(NoRoute, match="check OPENAI_API_KEY"):
        client.submit(Request(model="gpt-4o-mini", messages=HI))

    models_answer(stack, 200)
    assert cli(stack, "health", "check").returncode == 0

    def routed_again() -> str | None:
        try:  # the client reads vendors' health at most once a second
            return client.submit(Request(model="gpt-4o-mini", messages=HI))
        except NoRoute:
            return None

    assert wait_for(routed_again, 30, "the vendor to be routed to again")

    unknown = cli(stack, "health", "check", "nobody")
    assert unknown.returncode == 2
    assert "unknown vendor 'nobody' (configured: openai)" in unknown.stderr
