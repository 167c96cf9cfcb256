"""`Idempotency-Key` on the front, in process over fakeredis: one job (or batch) per key
and tenant, and `x-should-retry: false` on a timed-out answer a retry would duplicate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import fakeredis
import httpx
import pytest

from dispatcher import JobStatus
from producer.http_api.idempotency import MAX_HEADER_CHARS, idempotency_key_of
from tests.unit.test_http_batches import (
    ACME,
    GLOBEX,
    Front,
    batch_body,
    batch_lines,
    serving,
    upload,
)

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def front() -> AsyncIterator[Front]:
    made = Front()

    async def no_worker_wait(job_id: str, timeout_s: float = 0) -> Any:
        raise TimeoutError(f"job {job_id} has not ended")

    made.client.wait = no_worker_wait  # type: ignore[method-assign]
    async with serving(made.app):
        yield made
    await made.client.aclose()


def jobs(front: Front) -> int:
    redis = front.client.sync.store.redis
    assert isinstance(redis, fakeredis.FakeRedis)
    return len(redis.keys("*:job:*[0-9a-f]"))


async def chat(http: httpx.AsyncClient, key: str | None = None) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    return await http.post("/v1/chat/completions", json=CHAT, headers=headers)


async def test_the_same_key_is_the_same_job_for_its_tenant_only(front: Front) -> None:
    async with front.http(ACME) as acme, front.http(GLOBEX) as globex:
        first, again = await chat(acme, "order-1"), await chat(acme, "order-1")
        theirs = await chat(globex, "order-1")
        other = await chat(acme, "order-2")
    ids = [answer.headers["x-llmdispatch-job-id"] for answer in (first, again, theirs, other)]
    assert ids[0] == ids[1]
    assert len({ids[0], ids[2], ids[3]}) == 3
    assert jobs(front) == 3
    assert (await front.client.get(ids[2])).request.user == "globex"


async def test_a_timed_out_answer_tells_sdks_not_to_retry_unless_a_retry_is_the_same_job(
    front: Front,
) -> None:
    async with front.http(ACME) as acme:
        plain = await chat(acme)
        keyed = await chat(acme, "order-3")
    assert (plain.status_code, plain.json()["error"]["code"]) == (504, "timeout")
    assert plain.headers["x-should-retry"] == "false"  # a retry would be a second job
    assert keyed.status_code == 504
    assert "x-should-retry" not in keyed.headers  # a retry waits for the same job again


@pytest.mark.parametrize("key", ["", "x" * (MAX_HEADER_CHARS + 1), "line\x01break"])
async def test_a_bad_key_is_refused_naming_the_header_and_nothing_is_written(
    front: Front, key: str
) -> None:
    async with front.http(ACME) as acme:
        answer = await acme.post(
            "/v1/chat/completions",
            json=CHAT,
            headers={"Idempotency-Key": key},
        )
    assert answer.status_code == 400
    assert "Idempotency-Key" in answer.json()["error"]["message"]
    assert jobs(front) == 0


async def test_the_same_key_is_the_same_batch(front: Front) -> None:
    async with front.http(ACME) as acme:
        uploaded = (await upload(acme, batch_lines(2))).json()
        body = batch_body(input_file_id=uploaded["id"])
        key = {"Idempotency-Key": "nightly-1"}
        first = (await acme.post("/v1/batches", json=body, headers=key)).json()
        again = (await acme.post("/v1/batches", json=body, headers=key)).json()
        assert again == first
        listed = (await acme.get("/v1/batches")).json()["data"]
        assert [batch["id"] for batch in listed] == [first["id"]]
        front.end(first["id"], 0, JobStatus.SUCCEEDED, "done")
        assert (await acme.post("/v1/batches", json=body)).json()["id"] != first["id"]


def test_any_tenant_name_with_the_longest_key_makes_a_usable_key() -> None:
    value = "k" * MAX_HEADER_CHARS
    keys = {
        idempotency_key_of(SimpleNamespace(headers={"idempotency-key": value}), tenant)  # type: ignore[arg-type]
        for tenant in ("t" * 300, "acme", "acme:x", None)
    }
    assert len(keys) == 4  # each tenant its own
    assert all(key is not None and len(key) <= 256 for key in keys)
