"""`llmdispatch serve` driven by OpenAI's own Python SDK: real front, workers, Redis, stand-in.

The SDK is the client, unchanged: `base_url` is the front's `/v1`, `api_key` one
of the configured keys. Shown: chat plain and streamed (assembled by the SDK's
own stream helpers), tool calls, `models.list()`, a wrong key
(AuthenticationError), an unknown field (BadRequestError naming it), a vendor
429 that the worker's retries absorb, and one that outlasts them
(RateLimitError with Retry-After), the tenant carried as the job's user, the
job id header, the body limit, and /healthz, /readyz, /metrics and /docs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from dispatcher import JobStatus
from producer import Client
from producer.cli.tools.embedded_redis import free_port
from tests.chat_samples import WEATHER_TOOL
from tests.integration.stack import Front, Stack, running_stack, stop_process, wait_for

pytestmark = pytest.mark.integration

VENDOR_KEY = "sk-front-vendor-0123456789abcdef"
ACME_KEY = "acme-front-key-0123456789abcdefghij"
GLOBEX_KEY = "globex-front-key-0123456789abcdefgh"
JOB_ID_HEADER = "x-llmdispatch-job-id"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config: dict[str, Any] = {
        "vendors": {
            "primary": {
                "type": "openai",
                "base_url": "{url}/v1",
                "models": ["gpt-4o", "gpt-4o-mini"],
                "api_key": "${OPENAI_API_KEY}",
                "timeout_s": 5,
            }
        },
        "model_groups": {"smart": [{"vendor": "primary", "model": "gpt-4o"}]},
        "default_vendor": "primary",
        "retry_policy": {"max_retries": 1, "backoff": "fixed", "initial_delay_s": 0.2},
        "server": {"max_body_bytes": 64 * 1024},
    }
    with running_stack(tmp_path_factory.mktemp("front")) as running:
        running.configure(
            config,
            OPENAI_API_KEY=VENDOR_KEY,
            LLMDISPATCH_SERVER_API_KEYS=f"{ACME_KEY}:acme,{GLOBEX_KEY}:globex",
        )
        running.start_worker(["llm.primary"], concurrency=8)
        running.start_front()
        yield running


@pytest.fixture(scope="module")
def front(stack: Stack) -> Front:
    (running,) = stack.fronts
    return running


@pytest.fixture(scope="module")
def sdk(front: Front) -> Iterator[openai.OpenAI]:
    # No SDK retries: what the test sees is what the front answered.
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key=ACME_KEY, max_retries=0)
    yield client
    client.close()


@pytest.fixture(scope="module")
def jobs(stack: Stack) -> Iterator[Client]:
    with stack.environment():
        client = Client.from_env()
    yield client
    client.close()


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_a_chat_completion_is_a_job_answered_in_openais_shape(
    sdk: openai.OpenAI, jobs: Client
) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=user("Hello front")
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "echo: Hello front"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 3)

    job_id = raw.headers[JOB_ID_HEADER]
    assert completion.id == f"chatcmpl-{job_id}"
    record = jobs.get(job_id)
    assert record.request.user == "acme"  # the key's tenant, for limits and statistics
    assert record.response is not None
    assert record.response.vendor == "primary"


def test_a_stream_is_assembled_by_the_sdks_own_stream_helper(sdk: openai.OpenAI) -> None:
    # 150 ms between the vendor's events, so they reach the client as separate chunks.
    prompt = "one two three [fault:stall:150 helper]"
    with sdk.chat.completions.stream(
        model="gpt-4o-mini", messages=user(prompt), stream_options={"include_usage": True}
    ) as stream:
        texts = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(texts) == f"echo: {prompt}"
    assert len(texts) > 1
    assert final.choices[0].message.content == f"echo: {prompt}"
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None
    assert final.usage.completion_tokens == 6


def test_raw_chunks_carry_the_role_first_then_text_then_usage_then_done(
    front: Front,
) -> None:
    body = {"model": "gpt-4o-mini", "messages": user("a b"), "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    headers = {"authorization": f"Bearer {ACME_KEY}"}
    with httpx.stream(
        "POST", f"{front.url}/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.headers[JOB_ID_HEADER]
        lines = [line for line in answer.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "echo: a b"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 2 + 3


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_tool_call_comes_back_as_openais_tool_calls(sdk: openai.OpenAI, stream: bool) -> None:
    asked: dict[str, Any] = {"model": "gpt-4o", "messages": user("Paris"), "tools": [WEATHER_TOOL]}
    if stream:
        with sdk.chat.completions.stream(**asked) as events:
            completion = events.get_final_completion()
    else:
        completion = sdk.chat.completions.create(**asked)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_models_lists_the_groups_and_the_vendors_models(sdk: openai.OpenAI) -> None:
    ids = {model.id for model in sdk.models.list()}
    assert ids == {"smart", "gpt-4o", "gpt-4o-mini"}


def test_a_wrong_key_is_an_authentication_error(front: Front) -> None:
    with openai.OpenAI(base_url=f"{front.url}/v1", api_key="sk-wrong-key-000000000000",
                       max_retries=0) as stranger:  # fmt: skip
        with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
            stranger.chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
        with pytest.raises(openai.AuthenticationError):
            stranger.models.list()


def test_an_unknown_field_is_a_bad_request_naming_it(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=user("hi"), presence_penalty=0.5)
    assert caught.value.status_code == 400
    assert caught.value.param == "presence_penalty"  # type: ignore[attr-defined]
    assert caught.value.type == "invalid_request_error"  # type: ignore[attr-defined]
    assert "presence_penalty" in str(caught.value)


def test_an_idempotency_key_makes_a_retried_chat_one_job_per_tenant(
    sdk: openai.OpenAI, front: Front, stack: Stack
) -> None:
    """A client that retries with the same Idempotency-Key (after a dropped connection,
    say) gets the first attempt's job and answer: the vendor is called once."""
    marker = "[idempotent chat]"
    key = {"Idempotency-Key": "order-42"}
    first = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=user(marker), extra_headers=key
    )
    again = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=user(marker), extra_headers=key
    )
    assert first.headers[JOB_ID_HEADER] == again.headers[JOB_ID_HEADER]
    assert again.parse().choices[0].message.content == f"echo: {marker}"
    assert sum(marker in json.dumps(r["body"]) for r in stack.received()) == 1
    with openai.OpenAI(base_url=f"{front.url}/v1", api_key=GLOBEX_KEY, max_retries=0) as globex:
        theirs = globex.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=user(marker), extra_headers=key
        )
    assert theirs.headers[JOB_ID_HEADER] != first.headers[JOB_ID_HEADER]  # a tenant's own
    assert sum(marker in json.dumps(r["body"]) for r in stack.received()) == 2


def test_a_vendor_429_the_retries_absorb_is_an_answer(sdk: openai.OpenAI, stack: Stack) -> None:
    marker = "[fault:429@1 absorbed]"
    completion = sdk.chat.completions.create(model="gpt-4o-mini", messages=user(marker))
    assert completion.choices[0].message.content == f"echo: {marker}"
    assert sum(marker in json.dumps(r["body"]) for r in stack.received()) == 2


def test_a_vendor_429_that_outlasts_the_retries_is_a_rate_limit_error(
    sdk: openai.OpenAI, stack: Stack
) -> None:
    marker = "[fault:429,retry-after:3 always]"
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=user(marker))
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.response.headers[JOB_ID_HEADER]
    assert sum(marker in json.dumps(r["body"]) for r in stack.received()) == 2


def test_a_body_over_the_limit_is_refused_before_any_job(front: Front, stack: Stack) -> None:
    received = len(stack.received())
    answer = httpx.post(
        f"{front.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {ACME_KEY}"},
        json={"model": "gpt-4o-mini", "messages": user("x" * 70_000)},
        timeout=30,
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "request_too_large"
    assert JOB_ID_HEADER not in answer.headers
    assert len(stack.received()) == received


def test_operations_endpoints_answer(front: Front, sdk: openai.OpenAI) -> None:
    assert httpx.get(f"{front.url}/healthz", timeout=10).json() == {"status": "ok"}
    assert httpx.get(f"{front.url}/readyz", timeout=10).json() == {"status": "ready"}
    assert httpx.get(f"{front.url}/docs", timeout=10).status_code == 200
    schema = httpx.get(f"{front.url}/openapi.json", timeout=10).json()
    assert "/v1/chat/completions" in schema["paths"]
    sdk.models.list()

    def tokens() -> dict[str, float]:
        text = httpx.get(f"{front.url}/metrics", timeout=10).text
        return {
            line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("llmdispatch_http_tokens_total{")
        }

    before = tokens()
    sdk.chat.completions.create(model="gpt-4o-mini", messages=user("count me"))
    after = tokens()
    # Per tenant: "count me" is 2 prompt words, "echo: count me" 3 completion words.
    for kind, words in (("prompt", 2), ("completion", 3)):
        label = f'kind="{kind}",tenant="acme"'
        assert after[label] - before.get(label, 0.0) == words
    metrics = httpx.get(f"{front.url}/metrics", timeout=10).text
    assert (
        'llmdispatch_http_requests_total{method="GET",route="/v1/models",status="200",'
        'tenant="acme"}' in metrics
    )
    # Neither keys nor prompts reach the front's log.
    log = front.log_text()
    assert ACME_KEY not in log
    assert "Hello front" not in log
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in log


def test_a_chunked_body_over_the_limit_is_a_413_too(front: Front, stack: Stack) -> None:
    received = len(stack.received())
    body = json.dumps({"model": "gpt-4o-mini", "messages": user("y" * 70_000)}).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    answer = httpx.post(
        f"{front.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {ACME_KEY}", "content-type": "application/json"},
        content=chunks(),
        timeout=30,
    )
    assert "content-length" not in answer.request.headers
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "request_too_large"
    assert len(stack.received()) == received


def _stream_lines(front: Front, prompt: str, **headers: str) -> tuple[str, list[str]]:
    body = {"model": "gpt-4o-mini", "messages": user(prompt), "stream": True}
    with httpx.stream(
        "POST",
        f"{front.url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {ACME_KEY}", **headers},
        timeout=60,
    ) as answer:
        assert answer.status_code == 200
        return answer.headers[JOB_ID_HEADER], [line for line in answer.iter_lines() if line]


def test_a_retry_after_text_went_out_ends_the_stream_with_an_error_not_bad_text(
    front: Front, jobs: Client
) -> None:
    # The first attempt breaks off halfway; the worker retries, and the reply starts over.
    prompt = "one two three four five six [fault:midstream-drop@1 reset]"
    job_id, lines = _stream_lines(front, prompt)
    events = [json.loads(line.removeprefix("data: ")) for line in lines if line != "data: [DONE]"]
    assert events[-1]["error"]["code"] == "stream_reset"
    assert f"chatcmpl-{job_id}" in events[-1]["error"]["message"]
    sent = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e.get("choices"))
    assert sent  # part of the first attempt went out, and nothing after the reset
    assert f"echo: {prompt}".startswith(sent)

    # The job went on; its whole result is there once it ends.
    jobs.wait(job_id, timeout_s=60)
    answer = httpx.get(
        f"{front.url}/v1/chat/completions/chatcmpl-{job_id}",
        headers={"authorization": f"Bearer {ACME_KEY}"},
        timeout=30,
    )
    assert answer.json()["choices"][0]["message"]["content"] == f"echo: {prompt}"
    # Another tenant cannot read it.
    other = httpx.get(
        f"{front.url}/v1/chat/completions/chatcmpl-{job_id}",
        headers={"authorization": f"Bearer {GLOBEX_KEY}"},
        timeout=30,
    )
    assert other.status_code == 404


@pytest.mark.parametrize("cancel", [False, True], ids=["kept", "cancelled"])
def test_a_client_that_hangs_up_cancels_its_job_only_when_it_asked(
    front: Front, jobs: Client, cancel: bool
) -> None:
    # 300 ms between chunks: the client is gone long before the reply ends.
    prompt = f"a b c d e f [fault:stall:300 hangup-{cancel}]"
    headers = {"authorization": f"Bearer {ACME_KEY}"}
    if cancel:
        headers["x-llmdispatch-cancel-on-disconnect"] = "true"
    body = {"model": "gpt-4o-mini", "messages": user(prompt), "stream": True}
    with httpx.stream(
        "POST", f"{front.url}/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as answer:
        job_id = answer.headers[JOB_ID_HEADER]
        next(line for line in answer.iter_lines() if '"content"' in line)
    # Leaving the block closed the connection mid-stream.
    expected = JobStatus.CANCELLED if cancel else JobStatus.SUCCEEDED
    wait_for(lambda: jobs.get(job_id).status is expected, 60, f"the job to be {expected.value}")


def test_without_redis_the_front_is_alive_not_ready_and_answers_503(
    tmp_path: Path, stack: Stack
) -> None:
    # The same configuration, but a Redis address where nothing listens.
    env = {**stack.env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    port = free_port()
    log = tmp_path / "front.log"
    args = [sys.executable, "-c", "from producer.cli import main; main()",
            "serve", "--port", str(port)]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:

        def alive() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(alive, 60, "the front to answer /healthz")
        ready = httpx.get(f"{url}/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "store_unavailable"
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=ACME_KEY, max_retries=0)
        with sdk, pytest.raises(openai.InternalServerError) as caught:
            sdk.chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
        assert caught.value.status_code == 503
        assert "Redis" in str(caught.value)
    finally:
        stop_process(process)


def _job_with_prompt(jobs: Client, prompt: str) -> str | None:
    """The id of the job whose request holds `prompt` (the client never heard it)."""
    for key in jobs.store.redis.scan_iter(match="itest:job:*", count=1000):
        name = key.decode() if isinstance(key, bytes) else key
        parts = name.split(":")
        if len(parts) != 3:
            continue
        request = jobs.store.redis.hget(name, "request")
        if request is not None and prompt in (
            request if isinstance(request, str) else request.decode()
        ):
            return parts[2]
    return None


@pytest.mark.parametrize("cancel", [False, True], ids=["kept", "cancelled"])
def test_a_whole_answers_client_that_hangs_up_cancels_the_job_only_when_it_asked(
    front: Front, jobs: Client, cancel: bool
) -> None:
    # The vendor answers after 3 s (its timeout is 5); the client gives up after 0.5.
    prompt = f"slow reply [fault:slow:3000 plain-hangup-{cancel}]"
    headers = {"authorization": f"Bearer {ACME_KEY}"}
    if cancel:
        headers["x-llmdispatch-cancel-on-disconnect"] = "true"
    body = {"model": "gpt-4o-mini", "messages": user(prompt)}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{front.url}/v1/chat/completions", json=body, headers=headers, timeout=0.5)
    job_id = wait_for(lambda: _job_with_prompt(jobs, prompt), 30, "the job to be found")
    expected = JobStatus.CANCELLED if cancel else JobStatus.SUCCEEDED
    wait_for(lambda: jobs.get(job_id).status is expected, 60, f"the job to be {expected.value}")
