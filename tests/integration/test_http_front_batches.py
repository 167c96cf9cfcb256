"""OpenAI's Files and Batches APIs on `llmdispatch serve`, driven by OpenAI's own Python SDK.

Real front, worker (interactive and batch lanes), Redis and stand-in vendor; the
stand-in answers "echo: " + the last user message, and faults ride in prompts
(`[fault:401 tag]`: that item fails; `[fault:slow:3000 tag]`: it takes 3 s).
Shown: a file uploaded and run as a batch, polled until it completes (never a
fixed sleep), its output file in input order and its failed item in the error
file; a cancel read as `cancelling` then `cancelled`; another tenant's key
getting 404s; listing a page at a time; and uploads refused for a bad line, a
wrong purpose or a size over the cap, with nothing kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from producer import Client
from tests.integration.stack import Front, Stack, running_stack, wait_for

pytestmark = pytest.mark.integration

VENDOR_KEY = "sk-front-vendor-0123456789abcdef"
ACME_KEY = "acme-batch-key-0123456789abcdefghij"
GLOBEX_KEY = "globex-batch-key-0123456789abcdefgh"
INITECH_KEY = "initech-batch-key-0123456789abcdefg"
MAX_FILE_BYTES = 256 * 1024
# Generous: a loaded machine runs a handful of stand-in calls in well under this.
BATCH_TIMEOUT_S = 120.0
ENDPOINT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config: dict[str, Any] = {
        "vendors": {
            "primary": {
                "type": "openai",
                "base_url": "{url}/v1",
                "models": ["gpt-4o", "gpt-4o-mini"],
                "api_key": "${OPENAI_API_KEY}",
                "timeout_s": 10,
            }
        },
        "default_vendor": "primary",
        "retry_policy": {"max_retries": 1, "backoff": "fixed", "initial_delay_s": 0.2},
        "server": {"max_file_bytes": MAX_FILE_BYTES},
    }
    keys = f"{ACME_KEY}:acme,{GLOBEX_KEY}:globex,{INITECH_KEY}:initech"
    with running_stack(tmp_path_factory.mktemp("front-batches")) as running:
        running.configure(config, OPENAI_API_KEY=VENDOR_KEY, LLMDISPATCH_SERVER_API_KEYS=keys)
        running.start_worker(["llm.primary", "llm.primary.batch"], concurrency=8)
        running.start_front()
        yield running


@pytest.fixture(scope="module")
def front(stack: Stack) -> Front:
    (running,) = stack.fronts
    return running


def sdk_for(front: Front, key: str) -> openai.OpenAI:
    # No SDK retries: what the test sees is what the front answered.
    return openai.OpenAI(base_url=f"{front.url}/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def acme(front: Front) -> Iterator[openai.OpenAI]:
    with sdk_for(front, ACME_KEY) as client:
        yield client


@pytest.fixture(scope="module")
def globex(front: Front) -> Iterator[openai.OpenAI]:
    with sdk_for(front, GLOBEX_KEY) as client:
        yield client


@pytest.fixture(scope="module")
def jobs(stack: Stack) -> Iterator[Client]:
    with stack.environment():
        client = Client.from_env()
    yield client
    client.close()


def batch_file(prompts: list[str], prefix: str = "req") -> bytes:
    """OpenAI Batch input lines, custom ids `<prefix>-1` ..., one prompt each."""
    lines = [
        {
            "custom_id": f"{prefix}-{n}",
            "method": "POST",
            "url": ENDPOINT,
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]},
        }
        for n, prompt in enumerate(prompts, start=1)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def run_batch(sdk: openai.OpenAI, content: bytes, **fields: Any) -> openai.types.Batch:
    uploaded = sdk.files.create(file=("input.jsonl", content), purpose="batch")
    return sdk.batches.create(
        input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h", **fields
    )


def until_status(sdk: openai.OpenAI, batch_id: str, *statuses: str) -> openai.types.Batch:
    """Poll the batch until its status is one of `statuses`."""

    def reached() -> openai.types.Batch | None:
        batch = sdk.batches.retrieve(batch_id)
        return batch if batch.status in statuses else None

    found: openai.types.Batch = wait_for(reached, BATCH_TIMEOUT_S, f"{batch_id}: {statuses}")
    return found


def lines_of(sdk: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(line) for line in sdk.files.content(file_id).text.splitlines()]


def test_a_batch_runs_to_completed_with_its_results_in_input_order(
    acme: openai.OpenAI, jobs: Client
) -> None:
    prompts = [f"front batch {n}" for n in range(1, 6)]
    prompts[2] += " [fault:401 front-batch-3]"  # the vendor refuses: the item fails
    content = batch_file(prompts)
    uploaded = acme.files.create(file=("input.jsonl", content), purpose="batch")
    assert (uploaded.object, uploaded.purpose, uploaded.status) == ("file", "batch", "processed")
    assert (uploaded.bytes, uploaded.filename) == (len(content), "input.jsonl")
    assert acme.files.content(uploaded.id).content == content

    created = acme.batches.create(
        input_file_id=uploaded.id,
        endpoint=ENDPOINT,
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert created.id.startswith("batch_")
    assert created.status in ("in_progress", "completed")
    assert (created.input_file_id, created.endpoint) == (uploaded.id, ENDPOINT)
    assert created.metadata == {"job": "nightly"}

    batch = until_status(acme, created.id, "completed")
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 5, "completed": 4, "failed": 1}
    assert batch.completed_at is not None
    assert batch.finalizing_at is not None

    output = lines_of(acme, batch.output_file_id)
    assert [line["custom_id"] for line in output] == ["req-1", "req-2", "req-4", "req-5"]
    for line in output:
        number = int(line["custom_id"].removeprefix("req-"))
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["choices"][0]["message"]["content"] == f"echo: {prompts[number - 1]}"
        job = jobs.get(line["id"].removeprefix("batch_req_"))
        assert job.request.user == "acme"  # the key's tenant, for limits and statistics
    (failed,) = lines_of(acme, batch.error_file_id)
    assert failed["custom_id"] == "req-3"
    assert failed["response"]["status_code"] == 401
    assert failed["error"]["code"]

    shown = acme.files.retrieve(batch.output_file_id or "")
    assert (shown.purpose, shown.status) == ("batch_output", "processed")
    assert shown.bytes == len(acme.files.content(shown.id).content)
    outputs = {f.id for f in acme.files.list(purpose="batch_output")}
    assert {batch.output_file_id, batch.error_file_id} <= outputs

    assert acme.files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        acme.files.retrieve(uploaded.id)


def test_a_cancelled_batch_reads_cancelling_then_cancelled(acme: openai.OpenAI) -> None:
    prompts = [f"slow {n} [fault:slow:3000 front-cancel-{n}]" for n in range(1, 7)]
    created = run_batch(acme, batch_file(prompts, prefix="slow"))

    cancelling = acme.batches.cancel(created.id)
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at is not None

    batch = until_status(acme, created.id, "cancelled")
    assert batch.cancelled_at is not None
    counts = batch.request_counts
    assert counts is not None
    assert counts.total == 6
    assert counts.completed + counts.failed == counts.total
    errors = lines_of(acme, batch.error_file_id)
    assert len(errors) == counts.failed
    assert {line["error"]["code"] for line in errors} == {"cancelled"}
    ids = [line["custom_id"] for line in errors]
    assert ids == sorted(ids, key=lambda custom_id: int(custom_id.rpartition("-")[2]))


def test_another_tenant_gets_404_for_the_file_and_the_batch(
    acme: openai.OpenAI, globex: openai.OpenAI
) -> None:
    uploaded = acme.files.create(file=("mine.jsonl", batch_file(["mine"])), purpose="batch")
    batch = acme.batches.create(
        input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
    )
    with pytest.raises(openai.NotFoundError):
        globex.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        globex.files.content(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        globex.files.delete(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        globex.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        globex.batches.cancel(batch.id)
    with pytest.raises(openai.BadRequestError) as caught:
        globex.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h")
    assert caught.value.param == "input_file_id"  # type: ignore[attr-defined]
    assert batch.id not in {b.id for b in globex.batches.list()}
    assert uploaded.id not in {f.id for f in globex.files.list()}
    until_status(acme, batch.id, "completed")


def test_batches_are_listed_newest_first_a_page_at_a_time(front: Front) -> None:
    with sdk_for(front, INITECH_KEY) as initech:  # a tenant of its own: a known listing
        uploaded = initech.files.create(file=("one.jsonl", batch_file(["page"])), purpose="batch")
        made = [
            initech.batches.create(
                input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
            ).id
            for _ in range(3)
        ]
        newest_first = made[::-1]
        page = initech.batches.list(limit=2)
        assert [b.id for b in page.data] == newest_first[:2]
        assert page.has_more is True
        following = page.get_next_page()
        assert [b.id for b in following.data] == newest_first[2:]
        assert following.has_more is False
        assert [b.id for b in initech.batches.list(limit=2)] == newest_first  # the SDK pages on
        for batch_id in made:
            until_status(initech, batch_id, "completed")


def test_a_bad_line_is_refused_at_upload_naming_it(acme: openai.OpenAI) -> None:
    content = batch_file(["fine", "fine too"]) + b'{"custom_id": "x", "body": \n' + b"[1, 2]\n"
    with pytest.raises(openai.BadRequestError) as caught:
        acme.files.create(file=("bad.jsonl", content), purpose="batch")
    assert caught.value.param == "file"  # type: ignore[attr-defined]
    message = str(caught.value)
    assert "2 bad lines" in message
    assert "line 3: not valid JSON" in message
    assert "line 4" in message


def test_a_wrong_purpose_or_endpoint_is_refused_naming_it(acme: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        acme.files.create(file=("in.jsonl", batch_file(["p"])), purpose="fine-tune")
    assert caught.value.param == "purpose"  # type: ignore[attr-defined]
    uploaded = acme.files.create(file=("in.jsonl", batch_file(["p"])), purpose="batch")
    with pytest.raises(openai.BadRequestError) as refused:
        acme.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/embeddings",
            completion_window="24h",
        )
    assert refused.value.param == "endpoint"  # type: ignore[attr-defined]


def test_a_file_over_the_cap_is_refused_and_not_kept(acme: openai.OpenAI) -> None:
    before = {f.id for f in acme.files.list()}
    line = batch_file(["x" * 1000])
    content = line * (MAX_FILE_BYTES // len(line) + 2)
    with pytest.raises(openai.APIStatusError) as caught:
        acme.files.create(file=("big.jsonl", content), purpose="batch")
    assert caught.value.status_code == 413
    assert {f.id for f in acme.files.list()} == before
