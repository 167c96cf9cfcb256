"""The front's Files and Batches APIs without a server: statuses and objects from our
records, pages, the Redis records on fakeredis, and the routes
driven in process (ASGI) over fakeredis, items ended by hand as a worker would."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import fakeredis
import httpx
import openai.types
import pytest
import redis

from dispatcher import Settings
from dispatcher.errors import BatchNotFound, DispatcherError, JobNotFound
from dispatcher.models import (
    BatchCounts,
    BatchItem,
    BatchRecord,
    JobError,
    JobStatus,
    Response,
    Usage,
)
from dispatcher.state.keys import Keys, valid_file_id
from producer import AsyncClient
from producer.http_api.app import create_app
from producer.http_api.batch_shapes import (
    BadRequest,
    after_index,
    batch_object,
    batch_of_file,
    create_fields,
    error_file_id,
    list_object,
    openai_status,
    output_file_id,
    output_files,
    parse_limit,
)
from producer.http_api.front_store import FrontBatch, FrontStore
from producer.unreachable import unavailable
from tests.chat_samples import RICH_REQUEST, TOOL_TURN

ACME = "acme-key-0123456789abcdef"
GLOBEX = "globex-key-0123456789abcdef"
BATCH_ID = "0123456789abcdef0123456789abcdef"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = datetime(2026, 1, 2, 3, 9, 5, tzinfo=UTC)


def record(
    *, pending: int = 0, succeeded: int = 0, failed: int = 0, cancelled: int = 0, cut: bool = False
) -> BatchRecord:
    counts = BatchCounts(
        total=pending + succeeded + failed + cancelled,
        queued=pending,
        succeeded=succeeded,
        failed=failed,
        cancelled=cancelled,
    )
    done = pending == 0
    return BatchRecord(
        batch_id=BATCH_ID,
        counts=counts,
        created_at=T0,
        finished_at=T1 if done else None,
        cancelled_at=T0 if cut else None,
        prompt_tokens=10,
        completion_tokens=4,
    )


def front(**fields: Any) -> FrontBatch:
    values: dict[str, Any] = {
        "batch_id": BATCH_ID,
        "tenant": "acme",
        "input_file_id": "file-" + "a" * 32,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "created_at": int(T0.timestamp()),
        **fields,
    }
    return FrontBatch(**values)


# --- keys ------------------------------------------------------------------------------


def test_the_front_keys_are_named_in_one_place_and_take_only_our_ids() -> None:
    keys = Keys("p")
    assert keys.file("file-" + "a" * 32) == "p:file:file-" + "a" * 32
    assert keys.file_content("file-" + "b" * 32 + "-output").endswith("-output:content")
    assert keys.batch_api(BATCH_ID) == f"p:batch:{BATCH_ID}:api"
    assert keys.tenant_files(None) == "p:tenant:-:files"
    acme = keys.tenant_batches("acme")
    assert acme.startswith("p:tenant:")
    assert acme.endswith(":batches")
    assert "acme" not in acme  # a digest: no text of the caller's reaches a key
    for bad in ("file-x", "file-" + "a" * 32 + ":x", "../file", "file-" + "A" * 32):
        assert not valid_file_id(bad)
        with pytest.raises(ValueError, match="not a file id"):
            keys.file(bad)
    with pytest.raises(JobNotFound):
        keys.batch_api("not-a-batch")


# --- statuses and objects --------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "cancel_asked", "status"),
    [
        (record(pending=3), False, "in_progress"),
        (record(pending=1, succeeded=2), False, "in_progress"),
        (record(pending=1, succeeded=2), True, "cancelling"),
        (record(pending=1, cancelled=2, cut=True), False, "cancelling"),
        (record(succeeded=2, failed=1), False, "completed"),
        (record(succeeded=3), True, "completed"),  # it ended before the cancel took
        (record(succeeded=1, cancelled=2, cut=True), True, "cancelled"),
    ],
)
def test_the_status_is_read_from_our_record(
    batch: BatchRecord, cancel_asked: bool, status: str
) -> None:
    assert openai_status(batch, cancel_asked=cancel_asked) == status


def test_a_completed_batch_is_openais_batch_object() -> None:
    ended = front(outputs_at=1, output_file_id="file-o", error_file_id="file-e")
    shown = batch_object(record(succeeded=2, failed=1), ended)
    parsed = openai.types.Batch.model_validate(shown)  # the SDK's own model reads it
    assert set(shown) - {"usage"} <= set(openai.types.Batch.model_fields)
    assert parsed.id == f"batch_{BATCH_ID}"
    assert (parsed.object, parsed.status, parsed.errors) == ("batch", "completed", None)
    assert (parsed.output_file_id, parsed.error_file_id) == ("file-o", "file-e")
    created, finished = int(T0.timestamp()), int(T1.timestamp())
    assert (parsed.created_at, parsed.in_progress_at) == (created, created)
    assert parsed.expires_at == created + 86_400
    assert (parsed.finalizing_at, parsed.completed_at) == (finished, finished)
    assert (parsed.cancelling_at, parsed.cancelled_at, parsed.failed_at) == (None, None, None)
    assert parsed.request_counts is not None
    assert parsed.request_counts.model_dump() == {"total": 3, "completed": 2, "failed": 1}
    assert shown["usage"]["total_tokens"] == 14
    assert shown["metadata"] is None


def test_a_batch_in_progress_has_no_end_times_and_no_files() -> None:
    shown = batch_object(record(pending=2, succeeded=1), front())
    assert shown["status"] == "in_progress"
    assert [shown[k] for k in ("finalizing_at", "completed_at", "output_file_id")] == [None] * 3


def test_a_cancelled_batch_counts_its_cancelled_items_as_failed() -> None:
    asked = int(T0.timestamp()) + 1
    shown = batch_object(record(succeeded=1, cancelled=2, cut=True), front(cancel_asked_at=asked))
    assert shown["status"] == "cancelled"
    assert shown["cancelling_at"] == asked
    assert shown["cancelled_at"] == int(T1.timestamp())
    assert shown["completed_at"] is None
    counts = shown["request_counts"]
    assert counts["completed"] + counts["failed"] == counts["total"] == 3


def item(index: int, status: JobStatus | None, **fields: Any) -> BatchItem:
    return BatchItem(index=index, custom_id=f"c{index}", job_id=f"{index:032x}", status=status,
                     **fields)  # fmt: skip


def test_output_and_error_files_split_the_items_keeping_their_order() -> None:
    reply = Response(content="hi", model="gpt-4o", vendor="openai", usage=Usage())
    items = [
        item(0, JobStatus.SUCCEEDED, response=reply),
        item(1, JobStatus.FAILED, error=JobError(kind="auth", message="no", status_code=401)),
        item(2, JobStatus.SUCCEEDED, response=reply),
        item(3, JobStatus.CANCELLED),
        item(4, None, error=JobError(kind="expired", message="gone")),
    ]
    succeeded, failed = output_files(items)
    ok = [json.loads(line) for line in succeeded.decode().splitlines()]
    bad = [json.loads(line) for line in failed.decode().splitlines()]
    assert [line["custom_id"] for line in ok] == ["c0", "c2"]
    assert [line["custom_id"] for line in bad] == ["c1", "c3", "c4"]
    assert list(ok[0]) == ["id", "custom_id", "response", "error"]
    assert ok[0]["response"]["body"]["choices"][0]["message"]["content"] == "hi"
    assert bad[0]["response"]["status_code"] == 401
    assert [line["error"]["code"] for line in bad] == ["auth", "cancelled", "expired"]
    assert output_files([]) == (b"", b"")


# --- request fields and pages ------------------------------------------------------------


def batch_body(**fields: Any) -> dict[str, Any]:
    return {"input_file_id": "file-1", "endpoint": "/v1/chat/completions",
            "completion_window": "24h", **fields}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (batch_body(endpoint="/v1/embeddings"), "endpoint"),
        (batch_body(completion_window="1h"), "completion_window"),
        (batch_body(input_file_id=""), "input_file_id"),
        (batch_body(metadata={f"k{i}": "v" for i in range(17)}), "metadata"),
        (batch_body(metadata={"k": 1}), "metadata"),
        (batch_body(metadata={"k": "v" * 513}), "metadata"),
        (batch_body(output_expires_after={"seconds": 3600}), "output_expires_after"),
        ([], None),
    ],
)
def test_a_bad_batch_body_names_its_param(body: Any, param: str | None) -> None:
    with pytest.raises(BadRequest) as caught:
        create_fields(body)
    assert caught.value.param == param


def test_a_good_batch_body_gives_file_window_and_metadata() -> None:
    assert create_fields(batch_body(metadata={"k": "v"})) == ("file-1", "24h", {"k": "v"})
    body = batch_body()
    del body["completion_window"]
    assert create_fields(body) == ("file-1", "24h", {})


def test_pages_run_newest_first_from_the_cursor() -> None:
    ids = ["e", "d", "c", "b", "a"]
    assert after_index(ids, None) == 0
    assert after_index(ids, "d") == 2
    assert after_index(ids, "zz") is None  # unknown: an empty page, not the first one
    objects = [{"id": i} for i in ids[2:5]]
    page = list_object(objects, 2)
    assert page == {"object": "list", "data": [{"id": "c"}, {"id": "b"}],
                    "first_id": "c", "last_id": "b", "has_more": True}  # fmt: skip
    assert list_object(objects[:2], 2)["has_more"] is False
    assert list_object([], 20) == {"object": "list", "data": [], "first_id": None,
                                   "last_id": None, "has_more": False}  # fmt: skip


@pytest.mark.parametrize("raw", ["0", "101", "-1", "ten", "2.5", "\u00b9", "\u0661"])
def test_a_limit_out_of_range_is_refused(raw: str) -> None:
    with pytest.raises(BadRequest, match="1 to 100"):
        parse_limit(raw, default=20, maximum=100)
    assert parse_limit(None, default=20, maximum=100) == 20
    assert parse_limit("100", default=20, maximum=100) == 100


# --- forms ----------------------------------------------------------------------------------


def multipart(fields: dict[str, str], content: bytes | None) -> tuple[bytes, str]:
    files = {"file": ("in.jsonl", content, "application/jsonl")} if content is not None else None
    built = httpx.Request("POST", "http://front/v1/files", data=fields, files=files)
    return built.read(), built.headers["content-type"]


# --- the Redis records ------------------------------------------------------------------


@pytest.fixture
def async_redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis()


def front_store(async_redis: fakeredis.FakeAsyncRedis, now: float = 1_000.0) -> FrontStore:
    clock = [now]
    return FrontStore(
        async_redis, Keys("t"), file_ttl_s=3_600, batch_ttl_s=7_200, now=lambda: clock[0]
    )


async def test_a_file_is_its_tenants_only_and_expires(
    async_redis: fakeredis.FakeAsyncRedis,
) -> None:
    store = front_store(async_redis)
    stored = await store.add_file("acme", filename="in.jsonl", purpose="batch", content=b"{}\n")
    assert openai.types.FileObject.model_validate(stored.to_object()).status == "processed"
    assert (stored.bytes, stored.created_at, stored.expires_at) == (3, 1_000, 4_600)
    assert await store.file(stored.id, "acme") == stored
    assert await store.file(stored.id, "globex") is None
    assert await store.file(stored.id, None) is None
    assert await store.file("file-../../x", "acme") is None
    assert await store.content(stored) == b"{}\n"
    keys = Keys("t")
    assert 0 < await async_redis.ttl(keys.file(stored.id)) <= 3_600
    assert 0 < await async_redis.ttl(keys.file_content(stored.id)) <= 3_600
    shorter = await store.add_file(None, filename="b", purpose="batch", content=b"", ttl_s=60)
    assert shorter.expires_at == 1_060
    assert [f.id for f in await store.files(None)] == [shorter.id]

    await async_redis.delete(keys.file(stored.id))  # as its TTL would
    assert await store.files("acme") == []
    assert await async_redis.zcard(keys.tenant_files("acme")) == 0


async def test_a_deleted_file_is_gone_with_its_bytes(
    async_redis: fakeredis.FakeAsyncRedis,
) -> None:
    store = front_store(async_redis)
    stored = await store.add_file("acme", filename="a", purpose="batch", content=b"x")
    await store.delete_file(stored)
    assert await store.file(stored.id, "acme") is None
    assert await store.content(stored) is None
    assert await store.files("acme") == []


async def test_batch_records_are_listed_per_tenant_newest_first(
    async_redis: fakeredis.FakeAsyncRedis,
) -> None:
    clock = [1_000.0]
    store = FrontStore(
        async_redis, Keys("t"), file_ttl_s=3_600, batch_ttl_s=7_200, now=lambda: clock[0]
    )
    ids = [f"{n:032x}" for n in range(3)]
    for batch_id in ids:
        clock[0] += 0.001  # the same second: still in order
        await store.add_batch(front(batch_id=batch_id))
    await store.add_batch(front(batch_id="f" * 32, tenant="globex"))
    assert await store.batch_ids("acme") == ids[::-1]
    assert await store.batch_ids("globex") == ["f" * 32]
    assert await store.batch(ids[0], "globex") is None
    assert await store.batch("nope", "acme") is None
    assert 0 < await async_redis.ttl(Keys("t").batch_api(ids[0])) <= 7_200

    assert await store.cancel_asked(ids[0]) == 1_000
    clock[0] = 2_000.0
    assert await store.cancel_asked(ids[0]) == 1_000  # the first ask counts
    await store.outputs_written(ids[0], "file-o", None, ttl_s=60)
    found = await store.batch(ids[0], "acme")
    assert found is not None
    assert (found.cancel_asked_at, found.outputs_at) == (1_000, 2_000)
    assert (found.output_file_id, found.error_file_id) == ("file-o", None)
    assert 0 < await async_redis.ttl(Keys("t").batch_api(ids[0])) <= 60
    await store.forget_batch("acme", ids[1])
    assert await store.batch_ids("acme") == [ids[2], ids[0]]


# --- the routes, in process -----------------------------------------------------------------


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[None]:
    """Run the app's lifespan (startup, then shutdown), as a server would."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


class Front:
    """An app over fakeredis, its client, and an HTTP client per tenant."""

    def __init__(self, max_file_bytes: int = 10**6) -> None:
        self.settings = Settings.load(
            openai_api_key="sk-test-0123456789",
            server={
                "api_keys": [{"key": ACME, "tenant": "acme"}, {"key": GLOBEX, "tenant": "globex"}],
                "max_file_bytes": max_file_bytes,
            },
        )
        server = fakeredis.FakeServer()
        self.client = AsyncClient(
            self.settings,
            redis_client=fakeredis.FakeAsyncRedis(server=server),
            sync_redis_client=fakeredis.FakeRedis(server=server),
            send=lambda *_: None,
        )
        self.app = create_app(self.settings, client=self.client)

    def http(self, key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://front",
            headers={"authorization": f"Bearer {key}"},
        )

    def end(self, batch_id: str, index: int, status: JobStatus, text: str = "") -> None:
        """End item `index` as a worker would: a reply, or an error."""
        own = batch_id.removeprefix("batch_")
        store = self.client.sync.store
        job_id = store.batches.job_ids(own)[index]
        reply = Response(content=text, model="gpt-4o-mini", vendor="openai")
        error = None if status is JobStatus.SUCCEEDED else DispatcherError("vendor said no")
        store.finish(job_id, status, vendor="openai", response=reply if error is None else None,
                     error=error, batch_id=own)  # fmt: skip


@pytest.fixture
async def app_front() -> AsyncIterator[Front]:
    made = Front(max_file_bytes=4_096)
    async with serving(made.app):
        yield made
    await made.client.aclose()


def batch_lines(count: int, **extra: Any) -> bytes:
    return "".join(
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "gpt-4o-mini", "user": "someone",
                             "messages": [{"role": "user", "content": f"p{i}"}], **extra}})
        + "\n"
        for i in range(count)
    ).encode()  # fmt: skip


async def upload(http: httpx.AsyncClient, content: bytes, purpose: str = "batch") -> Any:
    return await http.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": purpose}
    )


async def test_a_batch_runs_from_an_upload_to_its_output_files(app_front: Front) -> None:
    async with app_front.http(ACME) as acme, app_front.http(GLOBEX) as globex:
        uploaded = (await upload(acme, batch_lines(3, temperature=0.5))).json()
        assert (uploaded["object"], uploaded["purpose"]) == ("file", "batch")
        made = await acme.post("/v1/batches", json=batch_body(
            input_file_id=uploaded["id"], metadata={"run": "1"}))  # fmt: skip
        batch = made.json()
        assert (made.status_code, batch["status"]) == (200, "in_progress")
        assert batch["metadata"] == {"run": "1"}
        own = batch["id"].removeprefix("batch_")
        jobs = [await app_front.client.get(j)
                for j in app_front.client.sync.store.batches.job_ids(own)]  # fmt: skip
        assert {job.request.user for job in jobs} == {"acme"}  # the tenant, not the body's
        assert {job.request.temperature for job in jobs} == {0.5}

        for who in (f"/v1/batches/{batch['id']}", f"/v1/files/{uploaded['id']}"):
            assert (await globex.get(who)).status_code == 404
        assert (await globex.get("/v1/batches")).json()["data"] == []

        app_front.end(batch["id"], 0, JobStatus.SUCCEEDED, "echo: p0")
        app_front.end(batch["id"], 1, JobStatus.FAILED)
        assert (await acme.get(f"/v1/batches/{batch['id']}")).json()["output_file_id"] is None
        app_front.end(batch["id"], 2, JobStatus.SUCCEEDED, "echo: p2")
        ended = (await acme.get(f"/v1/batches/{batch['id']}")).json()
        assert ended["status"] == "completed"
        assert ended["request_counts"] == {"total": 3, "completed": 2, "failed": 1}

        output = await acme.get(f"/v1/files/{ended['output_file_id']}/content")
        lines = [json.loads(line) for line in output.text.splitlines()]
        assert [line["custom_id"] for line in lines] == ["r0", "r2"]
        errors = await acme.get(f"/v1/files/{ended['error_file_id']}/content")
        assert [json.loads(line)["custom_id"] for line in errors.text.splitlines()] == ["r1"]
        shown = (await acme.get(f"/v1/files/{ended['output_file_id']}")).json()
        assert (shown["purpose"], shown["bytes"]) == ("batch_output", len(output.content))
        assert (await globex.get(f"/v1/files/{ended['output_file_id']}")).status_code == 404
        listed = (await acme.get("/v1/files", params={"purpose": "batch_output"})).json()
        assert {f["id"] for f in listed["data"]} == {ended["output_file_id"],
                                                     ended["error_file_id"]}  # fmt: skip

        deleted = await acme.delete(f"/v1/files/{uploaded['id']}")
        assert deleted.json() == {"id": uploaded["id"], "object": "file", "deleted": True}
        assert (await acme.get(f"/v1/files/{uploaded['id']}/content")).status_code == 404


async def test_a_lines_whole_request_reaches_its_job(app_front: Front) -> None:
    line = {"custom_id": "tools", "method": "POST", "url": "/v1/chat/completions",
            "body": TOOL_TURN}  # fmt: skip
    async with app_front.http(ACME) as acme:
        uploaded = (await upload(acme, json.dumps(line).encode() + b"\n")).json()
        made = await acme.post("/v1/batches", json=batch_body(input_file_id=uploaded["id"]))
        own = made.json()["id"].removeprefix("batch_")
    (job_id,) = app_front.client.sync.store.batches.job_ids(own)
    job = await app_front.client.get(job_id)
    assert job.request == RICH_REQUEST.model_copy(update={"user": "acme"})
    (result,) = await app_front.client.batch_results(own)
    assert result.custom_id == "tools"


async def test_a_cancel_reads_cancelling_then_cancelled(app_front: Front) -> None:
    async with app_front.http(ACME) as acme:
        uploaded = (await upload(acme, batch_lines(3))).json()
        batch = (await acme.post("/v1/batches", json=batch_body(
            input_file_id=uploaded["id"]))).json()  # fmt: skip
        app_front.end(batch["id"], 0, JobStatus.SUCCEEDED, "done")
        cancelling = (await acme.post(f"/v1/batches/{batch['id']}/cancel")).json()
        assert cancelling["status"] == "cancelling"
        assert cancelling["cancelling_at"] is not None
        for _ in range(200):
            shown = (await acme.get(f"/v1/batches/{batch['id']}")).json()
            if shown["status"] != "cancelling":
                break
            await asyncio.sleep(0.01)
        assert shown["status"] == "cancelled"
        assert shown["request_counts"] == {"total": 3, "completed": 1, "failed": 2}
        errors = await acme.get(f"/v1/files/{shown['error_file_id']}/content")
        assert [json.loads(line)["error"]["code"] for line in errors.text.splitlines()] == [
            "cancelled", "cancelled"
        ]  # fmt: skip
        again = (await acme.post(f"/v1/batches/{batch['id']}/cancel")).json()
        assert again["status"] == "cancelled"  # an ended batch stays as it ended


async def test_batches_are_listed_newest_first_a_page_at_a_time(app_front: Front) -> None:
    async with app_front.http(ACME) as acme:
        uploaded = (await upload(acme, batch_lines(1))).json()
        body = batch_body(input_file_id=uploaded["id"])
        made = [(await acme.post("/v1/batches", json=body)).json()["id"] for _ in range(3)]
        first = (await acme.get("/v1/batches", params={"limit": 2})).json()
        assert [b["id"] for b in first["data"]] == made[:0:-1]
        assert (first["first_id"], first["last_id"], first["has_more"]) == (
            made[2], made[1], True
        )  # fmt: skip
        rest = (await acme.get("/v1/batches", params={"limit": 2, "after": made[1]})).json()
        assert ([b["id"] for b in rest["data"]], rest["has_more"]) == ([made[0]], False)
        refused = await acme.get("/v1/batches", params={"limit": 101})
        assert (refused.status_code, refused.json()["error"]["param"]) == (400, "limit")


@pytest.mark.parametrize(
    ("content", "purpose", "refusal"),
    [
        (batch_lines(2) + b"{oops\n" + b"[1]\n", "batch",
         (400, "file", "(2 bad lines): line 3: not valid JSON")),
        (batch_lines(1), "fine-tune", (400, "purpose", "only 'batch'")),
        (b"x" * 5_000, "batch", (413, "file", "4,096 bytes")),
        (b"", "batch", (400, "file", "no requests")),
    ],
)  # fmt: skip
async def test_a_bad_upload_is_refused_and_nothing_is_kept(
    app_front: Front, content: bytes, purpose: str, refusal: tuple[int, str, str]
) -> None:
    status, param, words = refusal
    async with app_front.http(ACME) as acme:
        answer = await upload(acme, content, purpose)
        assert answer.status_code == status
        error = answer.json()["error"]
        assert error["param"] == param
        assert words in error["message"]
        assert (await acme.get("/v1/files")).json()["data"] == []


async def test_a_chunked_upload_past_the_cap_is_a_413_too(app_front: Front) -> None:
    built = httpx.Request("POST", "http://front/v1/files", data={"purpose": "batch"},
                          files={"file": ("big.jsonl", b"x" * 20_000)})  # fmt: skip
    body = built.read()

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent as it comes
        for start in range(0, len(body), 1_000):
            yield body[start : start + 1_000]

    async with app_front.http(ACME) as acme:
        headers = {"content-type": built.headers["content-type"]}
        answer = await acme.post("/v1/files", content=chunks(), headers=headers)
        assert (answer.status_code, answer.json()["error"]["code"]) == (413, "file_too_large")
        assert (await acme.get("/v1/files")).json()["data"] == []


async def test_a_batch_needs_a_batch_file_of_the_callers_own(app_front: Front) -> None:
    async with app_front.http(ACME) as acme, app_front.http(GLOBEX) as globex:
        uploaded = (await upload(acme, batch_lines(1))).json()
        for http, body, param in [
            (globex, batch_body(input_file_id=uploaded["id"]), "input_file_id"),
            (acme, batch_body(input_file_id="file-" + "0" * 32), "input_file_id"),
            (acme, batch_body(input_file_id=uploaded["id"], endpoint="/v1/embeddings"),
             "endpoint"),
        ]:  # fmt: skip
            answer = await http.post("/v1/batches", json=body)
            assert (answer.status_code, answer.json()["error"]["param"]) == (400, param)
        assert (await acme.get("/v1/batches/batch_nope")).status_code == 404


async def test_a_batch_and_the_fronts_record_of_it_are_written_together(
    app_front: Front, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis lost right after the batch was written (the front's next read fails): the
    batch is already listed for its tenant, since its record went in the same MULTI/EXEC."""
    real_status = app_front.client.batch_status

    async def redis_gone(batch_id: str) -> BatchRecord:
        raise unavailable("redis://cache:6379/0", redis.ConnectionError("Connection refused"))

    async with app_front.http(ACME) as acme:
        uploaded = (await upload(acme, batch_lines(2))).json()
        monkeypatch.setattr(app_front.client, "batch_status", redis_gone)
        failed = await acme.post("/v1/batches", json=batch_body(input_file_id=uploaded["id"]))
        assert failed.status_code == 503
        monkeypatch.setattr(app_front.client, "batch_status", real_status)
        (listed,) = (await acme.get("/v1/batches")).json()["data"]
        assert (listed["input_file_id"], listed["status"]) == (uploaded["id"], "in_progress")
        assert listed["request_counts"]["total"] == 2
        shown = (await acme.get(f"/v1/batches/{listed['id']}")).json()
        assert shown == listed


async def test_a_batch_whose_last_write_fails_leaves_no_record_of_it(
    app_front: Front, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's last MULTI/EXEC carries the front's record: when it fails, neither is kept."""
    real_queue = FrontStore.queue_batch

    def queue_then_fail(self: FrontStore, pipe: Any, batch: FrontBatch) -> None:
        real_queue(self, pipe, batch)
        raise redis.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(FrontStore, "queue_batch", queue_then_fail)
    async with app_front.http(ACME) as acme:
        uploaded = (await upload(acme, batch_lines(2))).json()
        failed = await acme.post("/v1/batches", json=batch_body(input_file_id=uploaded["id"]))
        assert failed.status_code == 503
        assert (await acme.get("/v1/batches")).json()["data"] == []
    # Only the items written before the last step are left, for their pending TTL.
    keys = [key.decode() for key in app_front.client.sync.store.redis.keys("*")]
    (batch_id,) = {m[1] for key in keys if (m := re.fullmatch(r".*:batch:([0-9a-f]{32}).*", key))}
    with pytest.raises(BatchNotFound):
        await app_front.client.batch_status(batch_id)
    assert not [key for key in keys if key.endswith(":api")]
    assert not [key for key in keys if ":tenant:" in key and key.endswith(":batches")]


async def test_the_output_files_follow_the_batchs_latest_end_after_a_retry(
    app_front: Front,
) -> None:
    """`llmdispatch batch retry-failed` puts the failed items back: while they run the batch shows
    no files; once it ends again its files are written anew (reading one first included),
    and an error file that no longer has items is gone."""
    async with app_front.http(ACME) as acme:
        uploaded = (await upload(acme, batch_lines(3))).json()
        batch = (await acme.post("/v1/batches", json=batch_body(
            input_file_id=uploaded["id"]))).json()  # fmt: skip
        app_front.end(batch["id"], 0, JobStatus.SUCCEEDED, "echo: p0")
        app_front.end(batch["id"], 1, JobStatus.FAILED)
        app_front.end(batch["id"], 2, JobStatus.SUCCEEDED, "echo: p2")
        first = (await acme.get(f"/v1/batches/{batch['id']}")).json()
        assert first["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
        old_output, old_errors = first["output_file_id"], first["error_file_id"]
        assert old_errors is not None

        assert await app_front.client.retry_failed(batch["id"].removeprefix("batch_")) == 1
        running = (await acme.get(f"/v1/batches/{batch['id']}")).json()
        assert running["status"] == "in_progress"
        assert (running["output_file_id"], running["error_file_id"]) == (None, None)

        app_front.end(batch["id"], 1, JobStatus.SUCCEEDED, "echo: p1")
        output = await acme.get(f"/v1/files/{old_output}/content")  # before the batch is read
        lines = [json.loads(line) for line in output.text.splitlines()]
        assert [line["custom_id"] for line in lines] == ["r0", "r1", "r2"]
        assert lines[1]["response"]["body"]["choices"][0]["message"]["content"] == "echo: p1"
        again = (await acme.get(f"/v1/batches/{batch['id']}")).json()
        assert again["status"] == "completed"
        assert again["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
        assert (again["output_file_id"], again["error_file_id"]) == (old_output, None)
        assert (await acme.get(f"/v1/files/{old_errors}")).status_code == 404


def test_a_batchs_file_ids_name_their_batch_and_no_other_id_does() -> None:
    assert batch_of_file(output_file_id(BATCH_ID)) == BATCH_ID
    assert batch_of_file(error_file_id(BATCH_ID)) == BATCH_ID
    assert batch_of_file("file-" + "a" * 32) is None  # an upload


@pytest.mark.parametrize("seconds", ["\u00b9", "3600.0", "59", str(31 * 86_400)])
async def test_an_expiry_that_is_no_whole_number_in_range_is_refused(
    app_front: Front, seconds: str
) -> None:
    async with app_front.http(ACME) as acme:
        answer = await acme.post(
            "/v1/files",
            files={"file": ("in.jsonl", batch_lines(1))},
            data={"purpose": "batch", "expires_after[seconds]": seconds},
        )
    assert (answer.status_code, answer.json()["error"]["param"]) == (400, "expires_after[seconds]")
