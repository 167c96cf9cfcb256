"""The maximum request size (`LLMDISPATCH_MAX_REQUEST_BYTES`), enforced on every submit path."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from dispatcher import ConfigError, InvalidRequest, Request, Settings
from dispatcher.broker.messages import RunJob, RunJobs
from dispatcher.config.settings import DEFAULT_MAX_REQUEST_BYTES
from dispatcher.routing.request_size import check_request_size, request_size_problem
from producer import AsyncClient, Client
from producer.batch_files import BatchFileError

ENV = "LLMDISPATCH_MAX_REQUEST_BYTES"


def body(content: str = "hello") -> dict[str, Any]:
    return {"model": "any-model", "messages": [{"role": "user", "content": content}]}


def size_of(request: dict[str, Any]) -> int:
    """The bytes the job store writes for `request`."""
    return len(Request.model_validate(request).model_dump_json().encode())


def mock_settings(max_request_bytes: int) -> Settings:
    return Settings.load(vendors={"mock": {"type": "mock"}}, max_request_bytes=max_request_bytes)


class Sent:
    """Records what a client sends, job by job and batch message by batch message."""

    def __init__(self) -> None:
        self.jobs: list[RunJob] = []
        self.batches: list[RunJobs] = []

    def job(self, message: RunJob, queue: str, priority: int) -> None:
        self.jobs.append(message)

    def batch(self, message: RunJobs, queue: str) -> None:
        self.batches.append(message)


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def sent() -> Sent:
    return Sent()


def client_for(limit: int, fake_redis: fakeredis.FakeRedis, sent: Sent) -> Client:
    return Client(
        mock_settings(limit),
        redis_client=fake_redis,
        send=sent.job,
        send_jobs=sent.batch,
        rng=random.Random(0),
    )


# --- the setting ---------------------------------------------------------------------------


def test_the_default_maximum_is_four_mebibytes() -> None:
    assert DEFAULT_MAX_REQUEST_BYTES == 4 * 1024 * 1024
    assert Settings.load().max_request_bytes == DEFAULT_MAX_REQUEST_BYTES


def test_the_maximum_is_read_from_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV, "1000")

    assert Settings.load().max_request_bytes == 1000


@pytest.mark.parametrize("value", ["0", "-1", "lots", "1.5"])
def test_a_maximum_that_is_not_a_positive_whole_number_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(ENV, value)

    with pytest.raises(ConfigError) as refused:
        Settings.load()
    assert [problem.split(":")[0] for problem in refused.value.problems] == [ENV]


def test_the_maximum_belongs_to_the_environment_not_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "llmdispatch.yaml"
    path.write_text("max_request_bytes: 10\n")

    with pytest.raises(ConfigError, match=f"{ENV}: found in the configuration file"):
        Settings.load(config_file=path)


# --- the check -------------------------------------------------------------------------------


def test_a_request_exactly_at_the_maximum_fits_and_one_byte_over_does_not() -> None:
    request = Request.model_validate(body())
    size = size_of(body())

    assert request_size_problem(request, size) is None
    problem = request_size_problem(request, size - 1)
    assert problem == (
        f"request: {size:,} bytes is over the maximum request size of {size - 1:,} bytes "
        f"({ENV}); shorten the messages, or raise the maximum"
    )


def test_the_size_counts_utf8_bytes_of_the_json_the_job_store_writes() -> None:
    ascii_size = size_of(body("a" * 100))

    # "é" is two bytes in UTF-8; the store writes it unescaped.
    assert size_of(body("é" * 100)) == ascii_size + 100
    # A quote is escaped in the JSON: two bytes for one character.
    assert size_of(body('"' * 100)) == ascii_size + 100


def test_the_error_is_invalid_request_and_uses_thousands_separators() -> None:
    request = Request.model_validate(body("x" * 5_000_000))

    with pytest.raises(InvalidRequest) as refused:
        check_request_size(request, DEFAULT_MAX_REQUEST_BYTES)
    message = str(refused.value)
    assert message.startswith("request: 5,000,")
    assert "over the maximum request size of 4,194,304 bytes" in message
    assert ENV in message
    assert not refused.value.retryable


# --- Client.submit -------------------------------------------------------------------------


def test_submit_refuses_a_request_over_the_maximum_and_writes_and_sends_nothing(
    fake_redis: fakeredis.FakeRedis, sent: Sent
) -> None:
    client = client_for(100, fake_redis, sent)

    with pytest.raises(InvalidRequest, match=rf"^request: .* \({ENV}\)"):
        client.submit(body("x" * 200))
    assert fake_redis.dbsize() == 0
    assert sent.jobs == []


def test_submit_refuses_an_oversized_request_model_too(
    fake_redis: fakeredis.FakeRedis, sent: Sent
) -> None:
    client = client_for(100, fake_redis, sent)

    with pytest.raises(InvalidRequest, match="maximum request size"):
        client.submit(Request.model_validate(body("x" * 200)))
    assert fake_redis.dbsize() == 0


def test_submit_accepts_a_request_exactly_at_the_maximum(
    fake_redis: fakeredis.FakeRedis, sent: Sent
) -> None:
    request = body("x" * 200)
    client = client_for(size_of(request), fake_redis, sent)

    job_id = client.submit(request)

    assert client.get(job_id).request == Request.model_validate(request)
    assert [message.job_id for message in sent.jobs] == [job_id]


def test_send_streaming_checks_the_size_before_submitting(
    fake_redis: fakeredis.FakeRedis, sent: Sent
) -> None:
    client = client_for(100, fake_redis, sent)

    with pytest.raises(InvalidRequest, match="maximum request size"):
        client.send_streaming(body("x" * 200))
    assert fake_redis.dbsize() == 0


@pytest.fixture
async def async_client(fake_redis: fakeredis.FakeRedis, sent: Sent) -> AsyncIterator[AsyncClient]:
    async_redis = fakeredis.FakeAsyncRedis()
    async with AsyncClient(
        mock_settings(100), redis_client=async_redis, sync_redis_client=fake_redis, send=sent.job
    ) as client:
        yield client
    await async_redis.aclose()


async def test_the_async_client_refuses_an_oversized_request_and_writes_nothing(
    async_client: AsyncClient, fake_redis: fakeredis.FakeRedis, sent: Sent
) -> None:
    with pytest.raises(InvalidRequest, match="maximum request size"):
        await async_client.submit(body("x" * 200))
    assert fake_redis.dbsize() == 0
    assert sent.jobs == []


# --- batches ---------------------------------------------------------------------------------


def test_a_batch_with_an_oversized_item_is_refused_naming_the_item_and_writes_nothing(
    fake_redis: fakeredis.FakeRedis, sent: Sent
) -> None:
    small, large = body("x" * 10), body("x" * 200)
    client = client_for(size_of(small), fake_redis, sent)

    with pytest.raises(BatchFileError) as refused:
        client.submit_batch([small, large, small, large])
    assert [number for number, _ in refused.value.problems] == [2, 4]
    assert all(ENV in reason for _, reason in refused.value.problems)
    assert f"item 2: request: {size_of(large):,} bytes is over" in str(refused.value)
    assert fake_redis.dbsize() == 0
    assert sent.batches == []


def test_a_batch_file_with_oversized_lines_is_refused_naming_the_lines(
    fake_redis: fakeredis.FakeRedis, sent: Sent, tmp_path: Path
) -> None:
    small, large = body("x" * 10), body("x" * 200)
    openai_line = {"custom_id": "big", "method": "POST", "url": "/v1/chat/completions"}
    path = tmp_path / "in.jsonl"
    lines = [small, large, {}, {**openai_line, "body": large}]
    path.write_text("\n".join(json.dumps(line) if line else "" for line in lines) + "\n")
    client = client_for(size_of(small), fake_redis, sent)

    with pytest.raises(BatchFileError) as refused:
        client.submit_batch(path)
    # Line 3 is blank (skipped); the OpenAI line's request is its body.
    assert [number for number, _ in refused.value.problems] == [2, 4]
    assert "line 4: request: " in str(refused.value)
    assert fake_redis.dbsize() == 0


def test_oversized_items_are_reported_with_every_other_bad_item_in_one_error(
    fake_redis: fakeredis.FakeRedis, sent: Sent
) -> None:
    client = client_for(size_of(body()), fake_redis, sent)
    invalid = {**body(), "temperature": 7}
    duplicate = {**body(), "custom_id": "same"}

    with pytest.raises(BatchFileError) as refused:
        client.submit_batch([body(), body("x" * 200), invalid, duplicate, {**duplicate}])
    assert [number for number, _ in refused.value.problems] == [2, 3, 5]
    assert "maximum request size" in refused.value.problems[0][1]
    assert refused.value.problems[1][1].startswith("temperature: ")
    assert "duplicate custom_id" in refused.value.problems[2][1]
    assert fake_redis.dbsize() == 0


def test_a_batch_within_the_maximum_is_accepted(
    fake_redis: fakeredis.FakeRedis, sent: Sent
) -> None:
    request = body("x" * 50)
    client = client_for(size_of(request), fake_redis, sent)

    batch_id = client.submit_batch([request, request])

    assert client.batch_status(batch_id).counts.total == 2
