"""AWS Bedrock (Converse) through a real worker, over loopback, against the stand-in.

The stand-in speaks Converse and ConverseStream's event-stream framing
(`producer/cli/tools/standin/bedrock.py`). Two vendors of type bedrock share
it: `bedrock` with a Bedrock API key (Bearer), and `bedrock-iam` signing with
AWS SigV4 from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the worker's
environment (botocore's signer). Shown: text, a stream, a tool round trip
(plain and streamed), throttling retried, access denied at once (one call),
a signed request whose secret reaches no log, Redis key or record, a circuit
opened by failures, a shared rate limit, and the health probe on
ListFoundationModels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher import CircuitState, FinishReason, HealthStatus, VendorAuthError
from producer import Client
from tests.chat_samples import WEATHER_TOOL
from tests.integration.stack import Stack, running_stack, wait_for

pytestmark = pytest.mark.integration

KEY = "bedrock-api-key-ABSKQmVkcm9ja0FQSUtleS0wMTIzNDU2Nzg5"
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
BOTH = pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])


BEARER: dict[str, Any] = {
    "type": "bedrock",
    "base_url": "{url}",
    "region": "us-east-1",
    "timeout_s": 5,
    "api_key": "${BEDROCK_KEY}",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = {
        "vendors": {
            "bedrock": {
                "type": "bedrock",
                "base_url": "{url}",
                "region": "us-east-1",
                "timeout_s": 5,
                "api_key": "${BEDROCK_KEY}",
                "headers": {"x-vendor": "bedrock"},
            },
            "bedrock-iam": {
                "type": "bedrock",
                "base_url": "{url}",
                "region": "eu-west-1",
                "timeout_s": 5,
                "headers": {"x-vendor": "bedrock-iam"},
            },
            # Its first three calls fail with a ServiceUnavailableException.
            "bedrock-flaky": {
                **BEARER,
                "headers": {"x-vendor": "bedrock-flaky", "x-fake-fault": "503@3"},
            },
            # Two calls a second, one at a time: a limit every worker shares.
            "bedrock-limited": {
                **BEARER,
                "headers": {"x-vendor": "bedrock-limited"},
                "rpm": 120,
                "rpm_burst": 1,
            },
        },
        "model_groups": {
            "claude": [
                {"vendor": "bedrock-flaky", "model": MODEL},
                {"vendor": "bedrock", "model": MODEL},
            ]
        },
        "default_vendor": "bedrock",
        "retry_policy": {"max_retries": 2, "backoff": "fixed", "initial_delay_s": 0.2},
        "circuit_breaker": {"failure_threshold": 3, "reset_timeout_s": 600},
    }
    with running_stack(tmp_path_factory.mktemp("bedrock")) as running:
        running.configure(
            config,
            BEDROCK_KEY=KEY,
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            LLMDISPATCH_HEALTH_CHECK_INTERVAL_S="0.5",
        )
        queues = ["llm.bedrock", "llm.bedrock-iam", "llm.bedrock-flaky", "llm.bedrock-limited"]
        running.start_worker(queues, concurrency=4)
        yield running


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[Client]:
    with stack.environment():
        client = Client.from_env()
    yield client
    client.close()


def ask(stream: bool, vendor: str = "bedrock", **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "vendor": vendor, "allow_fallback": False, "stream": stream,
            **fields}  # fmt: skip


def calls_to(stack: Stack, vendor: str, marker: str) -> list[dict[str, Any]]:
    """What the stand-in received from `vendor` whose body mentions `marker`."""
    return [
        r
        for r in stack.received()
        if r["headers"].get("x-vendor") == vendor and marker in json.dumps(r["body"])
    ]


@BOTH
def test_a_text_reply_with_usage(client: Client, stack: Stack, stream: bool) -> None:
    prompt = f"Hello from Bedrock {'streamed' if stream else 'plain'}"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
    reply = client.wait(client.submit(ask(stream, messages=messages)), timeout_s=60)
    assert reply.vendor == "bedrock"
    assert reply.content == f"echo: {prompt}"
    assert reply.finish_reason is FinishReason.STOP
    assert reply.vendor_finish_reason == "end_turn"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (6, 5)

    (sent,) = calls_to(stack, "bedrock", prompt)
    action = "converse-stream" if stream else "converse"
    assert sent["path"] == f"/model/{MODEL}/{action}"
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert sent["body"]["system"] == [{"text": "Be brief."}]
    assert sent["body"]["messages"] == [{"role": "user", "content": [{"text": prompt}]}]


def test_a_stream_arrives_in_chunks_that_add_up_to_the_reply(client: Client) -> None:
    # 200 ms between the vendor's events: the worker passes them on as they come.
    prompt = "one two three four [fault:stall:200 spaced]"
    events = list(client.send_streaming(ask(True, messages=[{"role": "user", "content": prompt}])))
    assert events[-1].type == "done"
    assert events[-1].finish_reason is FinishReason.STOP
    chunks = [e.delta for e in events if e.type == "chunk"]
    assert len(chunks) > 1
    assert "".join(chunks) == f"echo: {prompt}"


@BOTH
def test_a_tool_round_trip_calls_the_tool_then_answers_from_its_result(
    client: Client, stack: Stack, stream: bool
) -> None:
    question = {"role": "user", "content": f"Paris {stream}"}
    first = client.wait(
        client.submit(ask(stream, messages=[question], tools=[WEATHER_TOOL])), timeout_s=60
    )
    assert first.finish_reason is FinishReason.TOOL_CALLS
    assert first.vendor_finish_reason == "tool_use"
    (call,) = first.tool_calls
    assert call.id.startswith("tooluse_")
    assert call.name == "get_weather"
    assert call.parsed_arguments() == {"city": f"Paris {stream}"}

    # The stand-in refuses a toolResult that answers no toolUse of the turn before.
    result = {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'}
    turn = [question, first.to_message(), result]
    second = client.wait(
        client.submit(ask(stream, messages=turn, tools=[WEATHER_TOOL])), timeout_s=60
    )
    assert second.content == 'echo: {"temp_c":18}'
    assert second.finish_reason is FinishReason.STOP
    sent = calls_to(stack, "bedrock", "temp_c")[-1]["body"]
    assert sent["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": call.id, "name": "get_weather",
                     "input": {"city": f"Paris {stream}"}}}
    ]  # fmt: skip
    assert sent["messages"][2]["content"][0]["toolResult"]["content"] == [{"json": {"temp_c": 18}}]
    assert sent["toolConfig"]["tools"][0]["toolSpec"]["name"] == "get_weather"


@BOTH
def test_throttling_is_retried_and_then_answered(
    client: Client, stack: Stack, stream: bool
) -> None:
    marker = f"[fault:429@1 throttled-{stream}]"
    job_id = client.submit(ask(stream, messages=[{"role": "user", "content": marker}]))
    reply = client.wait(job_id, timeout_s=60)
    assert reply.content == f"echo: {marker}"
    record = client.get(job_id)
    assert record.attempts == 2
    assert len(calls_to(stack, "bedrock", marker)) == 2


def test_access_denied_fails_at_once_without_a_retry(client: Client, stack: Stack) -> None:
    marker = "[fault:403 denied]"
    job_id = client.submit(ask(False, messages=[{"role": "user", "content": marker}]))
    with pytest.raises(VendorAuthError, match="AccessDeniedException") as caught:
        client.wait(job_id, timeout_s=60)
    assert KEY not in str(caught.value)
    assert client.get(job_id).attempts == 1
    assert len(calls_to(stack, "bedrock", marker)) == 1


def test_sigv4_signs_with_botocore_and_the_secret_reaches_no_log_or_redis(
    client: Client, stack: Stack
) -> None:
    prompt = "Signed by SigV4"
    job_id = client.submit(
        ask(False, vendor="bedrock-iam", messages=[{"role": "user", "content": prompt}])
    )
    assert client.wait(job_id, timeout_s=60).content == f"echo: {prompt}"

    (sent,) = calls_to(stack, "bedrock-iam", prompt)
    authorization = sent["headers"]["authorization"]
    assert re.fullmatch(
        rf"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/\d{{8}}/eu-west-1/bedrock/aws4_request, "
        r"SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}",
        authorization,
    ), authorization
    assert "x-amz-date" in sent["headers"]
    assert SECRET_KEY not in json.dumps(sent)

    # Nothing of the secret in any Redis value, nor in the worker's log.
    redis = client.store.redis
    for key in redis.scan_iter(count=1000):
        kind = redis.type(key)
        value = redis.dump(key) if kind != b"none" else b""
        assert SECRET_KEY.encode() not in (value or b""), key
    for worker in stack.workers:
        assert SECRET_KEY not in worker.log_text()


def test_failures_open_the_circuit_and_jobs_go_to_the_fallback_without_a_call(
    client: Client, stack: Stack
) -> None:
    def ask_group(tag: str) -> dict[str, Any]:
        # bedrock-flaky first, then the group's other deployment as the fallback.
        return {"model": "claude", "vendor": "bedrock-flaky",
                "messages": [{"role": "user", "content": f"group {tag}"}]}  # fmt: skip

    # The first job's three calls to bedrock-flaky fail (503, retried), which opens its
    # circuit; the job falls back to bedrock.
    first = client.wait(client.submit(ask_group("first")), timeout_s=60)
    assert (first.vendor, first.content) == ("bedrock", "echo: group first")
    assert len(calls_to(stack, "bedrock-flaky", "group first")) == 3

    # While it is open, a job goes straight to the fallback: not one call to bedrock-flaky.
    second = client.wait(client.submit(ask_group("second")), timeout_s=60)
    assert second.vendor == "bedrock"
    assert calls_to(stack, "bedrock-flaky", "group second") == []
    (status,) = [v for v in client.vendor_status() if v.name == "bedrock-flaky"]
    assert status.circuit is CircuitState.OPEN


def test_a_rate_limit_spaces_the_calls_out(client: Client, stack: Stack) -> None:
    tag = "limited"
    job_ids = [
        client.submit(ask(False, vendor="bedrock-limited",
                          messages=[{"role": "user", "content": f"{tag} {i}"}]))
        for i in range(4)
    ]  # fmt: skip
    for job_id in job_ids:
        assert client.wait(job_id, timeout_s=60).vendor == "bedrock-limited"
    arrivals = sorted(r["at"] for r in calls_to(stack, "bedrock-limited", tag))
    assert len(arrivals) == 4
    # 120 a minute with a burst of one: at least half a second between calls, however
    # fast the worker is (a slow machine only spaces them further). The bucket counts a
    # call when it is claimed, so allow a little for each call's way to the vendor.
    assert arrivals[-1] - arrivals[0] >= 3 * 0.5 - 0.3


def test_both_vendors_are_probed_healthy_on_list_foundation_models(client: Client) -> None:
    def statuses() -> dict[str, HealthStatus]:
        found = client.store.health.latest(["bedrock", "bedrock-iam"])
        return {name: health.status for name, health in found.items()}

    healthy = {"bedrock": HealthStatus.HEALTHY, "bedrock-iam": HealthStatus.HEALTHY}
    wait_for(
        lambda: statuses() == healthy,
        60,
        "both Bedrock vendors probed healthy",
    )
