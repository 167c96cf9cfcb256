"""OpenAI's Files API on the front: `/v1/files`, for batch input and output files.

An upload (`POST /v1/files`, multipart: `file` and `purpose`) is parsed by
Starlette's form reader (python-multipart; the file part spooled to a temporary
file past 1 MiB), refused past `server.max_file_bytes` with a 413 and nothing
kept (the body cap stops a larger body as it arrives), and checked as a whole
batch file before it is stored: every line an OpenAI Batch input line (or a
plain request) that our limits take, or a 400 naming the first bad lines and how
many there are. So a batch made from it
never fails for its input. Only purpose `batch` is taken; a batch's output and
error files (purpose `batch_output`) are written by `batches_api`, and read
here like any other (the first read of an ended batch's file writes them).

Files live in Redis (`front_store`) for `server.file_ttl_s`, or the shorter
`expires_after[seconds]` the uploader asks; each belongs to its uploader's
tenant, and reads as missing (404) for any other.
"""

from __future__ import annotations

import asyncio
from typing import IO, Any

from fastapi import APIRouter
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from dispatcher.errors import BatchNotFound
from producer.batch_files import BatchFileError, BatchLimits, bounded_lines, parse_batch_lines
from producer.http_api.batch_shapes import (
    BadRequest,
    after_index,
    batch_of_file,
    list_object,
    parse_limit,
    whole_number,
)
from producer.http_api.batches_api import batch_limits, ensure_outputs, outputs_due
from producer.http_api.context import client_of, settings_of, store_of, tenant_of
from producer.http_api.errors import api_error
from producer.http_api.front_store import FrontStore, StoredFile

__all__ = ["router"]

router = APIRouter()

UPLOAD_PURPOSE = "batch"
# Form fields besides `file`: the purpose, and OpenAI's expiry (anchor is always created_at).
_FIELDS = frozenset({"purpose", "expires_after[anchor]", "expires_after[seconds]"})
# OpenAI's bounds on expires_after[seconds]: an hour to 30 days.
MIN_EXPIRY_S = 3_600
MAX_EXPIRY_S = 30 * 86_400
# Files listed per page by default, and at most (OpenAI's).
MAX_FILE_LIST_LIMIT = 10_000
# A text field (purpose, expires_after[...]) is a short word, never a document.
MAX_FIELD = 64 * 1024
# Bad lines an upload's refusal names; the count covers every one.
SHOWN_PROBLEMS = 5


def _checked_content(file: IO[bytes], limits: BatchLimits) -> bytes:
    """The bytes of an uploaded batch file, once every line has been checked.

    Raises:
        BatchFileError: some line is bad, or there is none.
    """
    parse_batch_lines(bounded_lines(file, limits), limits=limits)
    file.seek(0)
    return file.read()


def refusal(error: BatchFileError) -> str:
    """What an upload's refusal says: how many lines are bad, and the first few."""
    count = len(error.problems)
    shown = "; ".join(f"line {n}: {reason}" for n, reason in error.problems[:SHOWN_PROBLEMS])
    more = count - min(count, SHOWN_PROBLEMS)
    plural = "s" if count != 1 else ""
    return f"invalid batch input file ({count} bad line{plural}): {shown}" + (
        f"; and {more} more" if more else ""
    )


def _expiry_s(fields: dict[str, str]) -> int | None:
    """The `expires_after[seconds]` asked, if any (`expires_after[anchor]`: created_at)."""
    anchor = fields.get("expires_after[anchor]")
    if anchor is not None and anchor != "created_at":
        raise BadRequest("expires_after[anchor]: only 'created_at'", "expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if seconds is None:
        return None
    expiry_s = whole_number(seconds)
    if expiry_s is None or not MIN_EXPIRY_S <= expiry_s <= MAX_EXPIRY_S:
        raise BadRequest(
            f"expires_after[seconds]: {MIN_EXPIRY_S} to {MAX_EXPIRY_S}", "expires_after[seconds]"
        )
    return expiry_s


@router.post("/v1/files", summary="Upload a batch input file (multipart: file, purpose)")
async def upload_file(request: HttpRequest) -> Response:
    tenant = tenant_of(request)
    settings = settings_of(request)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest("the body must be multipart/form-data (fields file and purpose)")
    try:
        form = await request.form(max_files=1, max_fields=len(_FIELDS), max_part_size=MAX_FIELD)
    except MultiPartException as exc:
        raise BadRequest(f"the multipart body does not parse: {exc.message}") from None
    try:
        fields: dict[str, str] = {}
        upload: UploadFile | None = None
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name != "file":
                    raise BadRequest(f"unknown file field {name!r}; the file goes in 'file'", name)
                upload = value
            elif name not in _FIELDS:
                raise BadRequest(f"unknown form field {name!r}", name)
            else:
                fields[name] = value
        purpose = fields.get("purpose")
        if purpose != UPLOAD_PURPOSE:
            shown = "missing" if purpose is None else f"{purpose!r}"
            raise BadRequest(
                f"purpose: only {UPLOAD_PURPOSE!r} is supported here, not {shown}", "purpose"
            )
        if upload is None:
            raise BadRequest("file: required (the JSONL batch input file)", "file")
        limit = settings.server.max_file_bytes
        if upload.size is not None and upload.size > limit:
            message = f"the file is larger than this server takes ({limit:,} bytes)"
            return api_error(413, message, param="file", code="file_too_large")
        ttl_s = _expiry_s(fields)
        try:
            content = await asyncio.to_thread(_checked_content, upload.file, batch_limits(settings))
        except BatchFileError as exc:
            raise BadRequest(refusal(exc), "file") from None
        filename = upload.filename
    finally:
        await form.close()
    stored = await store_of(request).add_file(
        tenant,
        filename=(filename or "upload.jsonl")[:255],
        purpose=UPLOAD_PURPOSE,
        content=content,
        ttl_s=ttl_s,
    )
    return JSONResponse(stored.to_object())


async def _file(request: HttpRequest, store: FrontStore, file_id: str) -> StoredFile | Response:
    """The caller's file `file_id`, or the 404 that answers for it.

    An ended batch's output or error file not yet written, or written for an earlier
    end (before its failed items were retried), is written first.
    """
    tenant = tenant_of(request)
    stored = await store.file(file_id, tenant)
    batch_id = batch_of_file(file_id)
    if batch_id is not None:
        front = await store.batch(batch_id, tenant)  # None for an id that names no job
        if front is not None:
            try:
                record = await client_of(request).batch_status(batch_id)
            except BatchNotFound:
                record = None
            if record is not None and outputs_due(front, record):
                await ensure_outputs(request, store, front, record)
                stored = await store.file(file_id, tenant)
    return _no_file(file_id) if stored is None else stored


def _no_file(file_id: str) -> Response:
    return api_error(404, f"No such File object: {file_id}", param="id", code="not_found")


@router.get("/v1/files", summary="The caller's files, newest first unless order=asc")
async def list_files(request: HttpRequest) -> dict[str, Any]:
    tenant = tenant_of(request)
    query = request.query_params
    limit = parse_limit(
        query.get("limit"), default=MAX_FILE_LIST_LIMIT, maximum=MAX_FILE_LIST_LIMIT
    )
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("order: 'asc' or 'desc'", "order")
    files = await store_of(request).files(tenant)
    if order == "asc":
        files.reverse()
    purpose = query.get("purpose")
    if purpose is not None:
        files = [f for f in files if f.purpose == purpose]
    start = after_index([f.id for f in files], query.get("after"))
    page = [] if start is None else files[start : start + limit + 1]
    return list_object([f.to_object() for f in page], limit)


@router.get("/v1/files/{file_id}", summary="A file's File object")
async def retrieve_file(request: HttpRequest, file_id: str) -> Response:
    found = await _file(request, store_of(request), file_id)
    if isinstance(found, Response):
        return found
    return JSONResponse(found.to_object())


@router.get("/v1/files/{file_id}/content", summary="A file's bytes")
async def file_content(request: HttpRequest, file_id: str) -> Response:
    store = store_of(request)
    found = await _file(request, store, file_id)
    if isinstance(found, Response):
        return found
    content = await store.content(found)
    if content is None:  # expired since its metadata was read
        return _no_file(file_id)
    return Response(content, media_type="application/octet-stream")


@router.delete("/v1/files/{file_id}", summary="Delete a file")
async def delete_file(request: HttpRequest, file_id: str) -> Response:
    store = store_of(request)
    found = await _file(request, store, file_id)
    if isinstance(found, Response):
        return found
    await store.delete_file(found)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})
