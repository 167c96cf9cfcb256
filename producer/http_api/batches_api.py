"""OpenAI's Batches API on the front: `/v1/batches`, over our own batches.

`POST /v1/batches` reads an uploaded batch file (`files`), submits its lines as
one of our batches (each request's `user` is the caller's tenant, each line
keeps its custom_id) and records what OpenAI's Batch object needs and ours
lacks (`front_store.FrontBatch`), listed under the tenant. The Batch object is
built from both (`batch_shapes`).

The first time a batch is seen ended, its results are written as two files,
`file-<id>-output` (succeeded items) and `file-<id>-errors` (failed and
cancelled ones), in input order and OpenAI's Batch output format, purpose
`batch_output`; a file that would be empty is not written, and its id is null.

A cancel answers at once with `cancelling`: the items are ended in the
background (a large batch takes a while), and the batch reads `cancelled`
once they all have.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from dataclasses import replace
from typing import Any

from fastapi import APIRouter
from fastapi import Request as HttpRequest

from dispatcher.config.settings import Settings
from dispatcher.errors import BatchNotFound
from dispatcher.models import BatchRecord
from producer.async_client import AsyncClient
from producer.batch_files import BatchFileError, BatchLimits, bounded_lines, parse_batch_lines
from producer.http_api.batch_shapes import (
    BATCH_PREFIX,
    BadRequest,
    after_index,
    batch_object,
    create_fields,
    error_file_id,
    list_object,
    output_file_id,
    output_files,
    parse_limit,
)
from producer.http_api.context import client_of, settings_of, store_of, tenant_of
from producer.http_api.front_store import FrontBatch, FrontStore
from producer.http_api.idempotency import idempotency_key_of

__all__ = ["batch_limits", "ensure_outputs", "outputs_due", "router"]

log = logging.getLogger("llmdispatch.http")

router = APIRouter()

# Batches listed per page by default, and at most (OpenAI's).
DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 100
# A cancel asked this long ago that has not marked the batch is asked again (its front died).
CANCEL_AGAIN_AFTER_S = 60
OUTPUT_PURPOSE = "batch_output"

# Cancels under way in the background, kept so they are not collected before they end.
_cancelling: dict[str, asyncio.Task[int]] = {}


def batch_limits(settings: Settings) -> BatchLimits:
    """What one batch file may hold (checked at upload, and again at creation)."""
    return BatchLimits(
        max_items=settings.max_batch_items,
        max_file_bytes=settings.server.max_file_bytes,
        max_request_bytes=settings.max_request_bytes,
    )


def _source(content: bytes, limits: BatchLimits, tenant: str | None) -> list[dict[str, Any]]:
    """A batch file's lines as `submit_batch` takes them: requests with their custom ids."""
    lines = parse_batch_lines(bounded_lines(io.BytesIO(content), limits), limits=limits)
    user = {"user": tenant} if tenant is not None else {}
    return [
        {
            **line.request.model_dump(mode="json", exclude_unset=True),
            **user,
            "custom_id": line.custom_id,
        }
        for line in lines
    ]


@router.post("/v1/batches", summary="Create a batch from a file uploaded for purpose batch")
async def create_batch(request: HttpRequest) -> dict[str, Any]:
    tenant = tenant_of(request)
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise BadRequest("the request body is not valid JSON") from None
    file_id, window, metadata = create_fields(body)
    store = store_of(request)
    stored = await store.file(file_id, tenant)
    content = None if stored is None else await store.content(stored)
    if stored is None or content is None:
        raise BadRequest(f"input_file_id: no file {file_id!r}", "input_file_id")
    if stored.purpose != "batch":
        raise BadRequest(
            f"input_file_id: {file_id} has purpose {stored.purpose!r}, not 'batch'",
            "input_file_id",
        )
    settings = settings_of(request)
    client = client_of(request)
    made_at = int(store.now())

    def front_of(batch_id: str) -> FrontBatch:
        return FrontBatch(
            batch_id=batch_id,
            tenant=tenant,
            input_file_id=file_id,
            endpoint=body["endpoint"],
            completion_window=window,
            created_at=made_at,
        )

    made: list[FrontBatch] = []

    def record_with_batch(pipe: Any, batch_id: str) -> None:
        made.append(front_of(batch_id))
        store.queue_batch(pipe, made[0])

    try:
        source = await asyncio.to_thread(_source, content, batch_limits(settings), tenant)
        # The front's record goes in the batch's own last MULTI/EXEC: both or neither.
        batch_id = await client.submit_batch(
            source,
            metadata=metadata or None,
            idempotency_key=idempotency_key_of(request, tenant),
            also_write=record_with_batch,
        )
    except BatchFileError as exc:
        raise BadRequest(str(exc), "input_file_id") from None
    # Nothing written: a repeated Idempotency-Key named the batch made before, and its record.
    front = made[0] if made else await store.batch(batch_id, tenant) or front_of(batch_id)
    return batch_object(await client.batch_status(batch_id), front)


async def _found(
    request: HttpRequest, store: FrontStore, batch_id: str, tenant: str | None
) -> tuple[FrontBatch, BatchRecord]:
    """The front's record and our record of the caller's batch `batch_id` (with its prefix).

    Raises:
        BatchNotFound: no such batch, it expired, or it is another tenant's.
    """
    own_id = batch_id.removeprefix(BATCH_PREFIX)
    front = await store.batch(own_id, tenant)
    if front is None:
        raise BatchNotFound(f"No batch found with id {batch_id!r}.")
    try:
        record = await client_of(request).batch_status(own_id)
    except BatchNotFound:
        await store.forget_batch(tenant, own_id)
        raise BatchNotFound(f"No batch found with id {batch_id!r}.") from None
    return front, record


def _end_of(record: BatchRecord) -> str:
    """The batch's end as the front notes it: its finished_at, or "" while it runs."""
    return repr(record.finished_at.timestamp()) if record.done and record.finished_at else ""


def outputs_due(front: FrontBatch, record: BatchRecord) -> bool:
    """True when the batch has ended and its files are missing or from an earlier end
    (`outputs_for` is "" until files are written)."""
    ended = _end_of(record)
    return bool(ended) and front.outputs_for != ended


async def ensure_outputs(
    request: HttpRequest, store: FrontStore, front: FrontBatch, record: BatchRecord
) -> FrontBatch:
    """`front` with the output and error files of the batch's latest end: written now if
    it has just ended, again if it ended anew after its failed items were retried
    (`llmdispatch batch retry-failed`), and none while such a retry runs."""
    ended = _end_of(record)
    if not ended:
        return replace(front, output_file_id=None, error_file_id=None)
    if front.outputs_for == ended:  # written for this end already
        return front
    batch_id = front.batch_id
    items = await client_of(request).batch_results(batch_id)
    succeeded, failed = await asyncio.to_thread(output_files, items)
    written: dict[str, str | None] = {}
    for file_id, content, kind in (
        (output_file_id(batch_id), succeeded, "output"),
        (error_file_id(batch_id), failed, "error"),
    ):
        written[kind] = file_id if content else None
        if content:
            await store.add_file(
                front.tenant,
                filename=f"{BATCH_PREFIX}{batch_id}_{kind}.jsonl",
                purpose=OUTPUT_PURPOSE,
                content=content,
                file_id=file_id,
                batch_id=batch_id,
            )
        elif (stale := await store.file(file_id, front.tenant)) is not None:
            await store.delete_file(stale)  # an earlier end's, which had such items
    # The batch's own keys expire `job_ttl_s` after its end: its front record goes with them.
    ttl_s = settings_of(request).job_ttl_s
    await store.outputs_written(batch_id, written["output"], written["error"], ttl_s, ended=ended)
    return replace(
        front,
        outputs_at=int(time.time()),
        outputs_for=ended,
        output_file_id=written["output"],
        error_file_id=written["error"],
    )


@router.get("/v1/batches/{batch_id}", summary="A batch, as OpenAI's Batch object")
async def retrieve_batch(request: HttpRequest, batch_id: str) -> dict[str, Any]:
    tenant = tenant_of(request)
    store = store_of(request)
    front, record = await _found(request, store, batch_id, tenant)
    _cancel_again_if_lost(request, front, record)
    front = await ensure_outputs(request, store, front, record)
    return batch_object(record, front)


@router.post("/v1/batches/{batch_id}/cancel", summary="Cancel a batch's items not yet ended")
async def cancel_batch(request: HttpRequest, batch_id: str) -> dict[str, Any]:
    tenant = tenant_of(request)
    store = store_of(request)
    front, record = await _found(request, store, batch_id, tenant)
    if record.done:  # an ended batch stays as it ended
        front = await ensure_outputs(request, store, front, record)
        return batch_object(record, front)
    front = replace(front, cancel_asked_at=await store.cancel_asked(front.batch_id))
    _cancel_in_background(client_of(request), front.batch_id)
    return batch_object(record, front)


def _cancel_in_background(client: AsyncClient, batch_id: str) -> None:
    """Cancel the batch's items in a task of their own (one per batch at a time)."""
    if batch_id in _cancelling:
        return
    task = asyncio.create_task(client.cancel_batch(batch_id))
    _cancelling[batch_id] = task

    def ended(done: asyncio.Task[int]) -> None:
        _cancelling.pop(batch_id, None)
        if not done.cancelled() and (problem := done.exception()) is not None:
            log.warning("cancelling batch %s failed: %s", batch_id, problem)

    task.add_done_callback(ended)


def _cancel_again_if_lost(request: HttpRequest, front: FrontBatch, record: BatchRecord) -> None:
    """Ask again for a cancel that never marked the batch (the front that took it died)."""
    asked = front.cancel_asked_at
    if (
        asked is not None
        and record.cancelled_at is None
        and not record.done
        and time.time() - asked > CANCEL_AGAIN_AFTER_S
    ):
        _cancel_in_background(client_of(request), front.batch_id)


@router.get("/v1/batches", summary="The caller's batches, newest first")
async def list_batches(request: HttpRequest) -> dict[str, Any]:
    tenant = tenant_of(request)
    limit = parse_limit(
        request.query_params.get("limit"), default=DEFAULT_LIST_LIMIT, maximum=MAX_LIST_LIMIT
    )
    after = request.query_params.get("after")
    store = store_of(request)
    ids = await store.batch_ids(tenant)
    start = after_index(ids, None if after is None else after.removeprefix(BATCH_PREFIX))
    objects: list[dict[str, Any]] = []
    for batch_id in ids[start:] if start is not None else []:
        if len(objects) > limit:  # one past the page says whether there are more
            break
        try:
            front, record = await _found(request, store, batch_id, tenant)
        except BatchNotFound:  # expired: it leaves the listing
            await store.forget_batch(tenant, batch_id)
            continue
        front = await ensure_outputs(request, store, front, record)
        objects.append(batch_object(record, front))
    return list_object(objects, limit)
