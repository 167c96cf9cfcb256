"""Tools, JSON formats and images through one batch of over 100 items, on every wire format.

A JSONL file in the OpenAI Batch format, 16 items per vendor (OpenAI, Azure
OpenAI, OpenAI-compatible, Anthropic, Gemini, Ollama, Cohere, all on the
stand-in): tool calls, strict json_schema replies, images and plain text. It
goes through `submit_batch` and a real worker, and comes back in input order,
through the client and through `llmdispatch batch results`, in OpenAI's output
format.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import FinishReason
from producer import Client
from tests.chat_samples import ANSWER_FORMAT, PNG_URL, WEATHER_TOOL
from tests.integration.stack import LLMDISPATCH_SCRIPT, Stack, running_stack

pytestmark = pytest.mark.integration

KEY = "chat-batch-test-0123456789abcdef"
# Vendor type -> a model of it that sees images, on the stand-in.
MODELS = {
    "openai": "gpt-4o",
    "azure": "my-gpt4o-deployment",
    "openai_compatible": "qwen2.5-vl-7b",
    "anthropic": "claude-sonnet-4-5",
    "gemini": "gemini-2.5-flash",
    "ollama": "llava",
    "cohere": "command-a-vision-07-2025",
}
KINDS = ("tool", "json", "image", "text")
PER_KIND = 4
BATCH_TIMEOUT_S = 120


def config() -> dict[str, Any]:
    vendors = {
        name: {
            "type": name,
            "base_url": "{url}/v1" if name.startswith("openai") else "{url}",
            "models": ["*"],
            "timeout_s": 10,
            "api_key": "${CHAT_BATCH_KEY}",
        }
        for name in MODELS
    }
    # An OpenAI-compatible server's images are its configuration's to declare.
    vendors["openai_compatible"]["capabilities"] = {"*-vl-*": ["tools", "vision", "json_schema"]}
    return {
        "vendors": vendors,
        "default_vendor": "openai",
        "retry_policy": {"max_retries": 1, "backoff": "fixed", "initial_delay_s": 0.2},
    }


def body(vendor: str, kind: str, n: int) -> dict[str, Any]:
    prompt = f"{vendor} city {n}"
    fields: dict[str, Any] = {"model": MODELS[vendor], "vendor": vendor, "allow_fallback": False}
    if kind == "image":
        url = PNG_URL
        content: Any = [
            {"type": "text", "text": prompt},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        return {**fields, "messages": [{"role": "user", "content": content}]}
    fields["messages"] = [{"role": "user", "content": prompt}]
    if kind == "tool":
        fields["tools"] = [WEATHER_TOOL]
    elif kind == "json":
        fields["response_format"] = ANSWER_FORMAT
    return fields


def lines() -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{vendor}-{kind}-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": body(vendor, kind, n),
        }
        for vendor in MODELS
        for kind in KINDS
        for n in range(PER_KIND)
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("chat-batch")) as running:
        running.configure(config(), CHAT_BATCH_KEY=KEY)
        queues = [f"llm.{name}{lane}" for name in MODELS for lane in ("", ".batch")]
        running.start_worker(queues, concurrency=8)
        yield running


def check(custom_id: str, body: dict[str, Any]) -> None:
    """One item's chat.completion body says what the stand-in answers for its kind."""
    vendor, kind, n = custom_id.rsplit("-", 2)
    prompt = f"{vendor} city {n}"
    choice = body["choices"][0]
    message = choice["message"]
    assert body["x_llmdispatch"]["vendor"] == vendor, custom_id
    if kind == "tool":
        assert choice["finish_reason"] == "tool_calls", custom_id
        (call,) = message["tool_calls"]
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == {"city": prompt}, custom_id
    elif kind == "json":
        assert json.loads(message["content"]) == {"city": prompt, "words": 3}, custom_id
    elif kind == "image":
        assert message["content"] == f"echo: {prompt} [1 image]", custom_id
    else:
        assert message["content"] == f"echo: {prompt}", custom_id


def test_a_batch_of_tools_json_and_images_on_every_wire_format_round_trips(
    stack: Stack, tmp_path: Path
) -> None:
    source = tmp_path / "chat.jsonl"
    sent = lines()
    assert len(sent) == 112
    source.write_text("".join(json.dumps(line) + "\n" for line in sent))
    with stack.environment():
        client = Client.from_env()
    with client:
        batch_id = client.submit_batch(str(source))
        done = client.wait_batch(batch_id, timeout_s=BATCH_TIMEOUT_S)
        assert (done.counts.succeeded, done.counts.total) == (112, 112)
        items = client.batch_results(batch_id)

    assert [item.custom_id for item in items] == [line["custom_id"] for line in sent]
    for item in items:
        assert item.response is not None, item.custom_id
        kind = item.custom_id.rsplit("-", 2)[1]
        if kind == "json":
            assert item.response.parsed == json.loads(item.response.content)
        if kind == "tool":
            assert item.response.finish_reason is FinishReason.TOOL_CALLS

    output = tmp_path / "results.jsonl"
    command = [str(LLMDISPATCH_SCRIPT), "batch", "results", batch_id, "-o", str(output)]
    finished = subprocess.run(
        command,
        env=stack.env,
        cwd=stack.workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["custom_id"] for record in records] == [line["custom_id"] for line in sent]
    for record in records:
        assert record["error"] is None, record
        assert record["response"]["status_code"] == 200
        check(record["custom_id"], record["response"]["body"])
