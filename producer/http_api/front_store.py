"""What the HTTP front keeps in Redis for OpenAI's Files and Batches APIs (`Keys`' names).

- A file: a hash of what its File object says (name, purpose, size, times) plus
  its tenant, and a string of its bytes; both expire `server.file_ttl_s` after
  it was written (sooner when the uploader asks), so nothing needs cleaning up.
- A batch made through the front: a hash of what OpenAI's Batch object has and
  our batch record has not (tenant, input file, endpoint, window, when a cancel
  was asked, its output and error files), expiring with the batch.
- Per tenant, its files and its batches: sorted sets by creation time, for the
  listings. A member whose file or batch has expired is dropped when met.

Tenancy is checked here: another tenant's file or batch reads as missing, so a
caller cannot even learn that it exists.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio

from dispatcher.state.keys import Keys, valid_file_id, valid_job_id
from dispatcher.state.redis_values import decoded, text

__all__ = ["FrontBatch", "FrontStore", "StoredFile"]

_NO_TENANT = ""  # as a hash field: a tenant name is never empty


@dataclass(frozen=True)
class StoredFile:
    """A file's metadata, as its File object shows it, and the tenant it belongs to."""

    id: str
    tenant: str | None
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int
    batch_id: str | None = None  # the batch an output or error file came from

    def to_object(self) -> dict[str, Any]:
        """OpenAI's File object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True)
class FrontBatch:
    """What the front keeps of a batch it made, beside the batch's own record."""

    batch_id: str
    tenant: str | None
    input_file_id: str
    endpoint: str
    completion_window: str
    created_at: int
    cancel_asked_at: int | None = None
    outputs_at: int | None = None  # when its output and error files were written
    outputs_for: str = ""  # the end they were written for: the batch's finished_at, as kept
    output_file_id: str | None = None
    error_file_id: str | None = None


def _tenant_field(tenant: str | None) -> str:
    return _NO_TENANT if tenant is None else tenant


def _file_of(file_id: str, tenant: str | None, reply: Mapping[Any, Any]) -> StoredFile | None:
    """The file a metadata hash describes, when it is `tenant`'s."""
    fields = decoded(reply)
    if not fields or fields.get("tenant") != _tenant_field(tenant):
        return None
    return StoredFile(
        id=file_id,
        tenant=tenant,
        filename=fields.get("filename", ""),
        purpose=fields.get("purpose", ""),
        bytes=int(fields.get("bytes", "0")),
        created_at=int(fields.get("created_at", "0")),
        expires_at=int(fields.get("expires_at", "0")),
        batch_id=fields.get("batch_id") or None,
    )


def _optional_int(fields: Mapping[str, str], name: str) -> int | None:
    value = fields.get(name)
    return int(value) if value else None


class FrontStore:
    """The front's files, batch records and per-tenant listings, over an asyncio client."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: Keys,
        *,
        file_ttl_s: int,
        batch_ttl_s: int,
        now: Callable[[], float] = time.time,
    ) -> None:
        """`batch_ttl_s`: how long a batch record may live, at most (its batch's own bound)."""
        self.redis = client
        self.keys = keys
        self.file_ttl_s = file_ttl_s
        self.batch_ttl_s = batch_ttl_s
        self.now = now

    # --- files -----------------------------------------------------------------------

    async def add_file(
        self,
        tenant: str | None,
        *,
        filename: str,
        purpose: str,
        content: bytes,
        file_id: str | None = None,
        ttl_s: int | None = None,
        batch_id: str | None = None,
    ) -> StoredFile:
        """Write a file (a new id unless `file_id`), kept `ttl_s` (default: the file TTL)."""
        moment = self.now()  # the listing's order: finer than the object's whole seconds
        now = int(moment)
        ttl = min(ttl_s or self.file_ttl_s, self.file_ttl_s)
        stored = StoredFile(
            id=file_id or f"file-{uuid.uuid4().hex}",
            tenant=tenant,
            filename=filename,
            purpose=purpose,
            bytes=len(content),
            created_at=now,
            expires_at=now + ttl,
            batch_id=batch_id,
        )
        head = {
            "tenant": _tenant_field(tenant),
            "filename": filename,
            "purpose": purpose,
            "bytes": stored.bytes,
            "created_at": now,
            "expires_at": stored.expires_at,
            "batch_id": batch_id or "",
        }
        index = self.keys.tenant_files(tenant)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.file_content(stored.id), content, ex=ttl)
        pipe.hset(self.keys.file(stored.id), mapping=cast("Mapping[Any, Any]", head))
        pipe.expire(self.keys.file(stored.id), ttl)
        pipe.zadd(index, {stored.id: moment})
        pipe.zremrangebyscore(index, "-inf", moment - self.file_ttl_s)
        pipe.expire(index, self.file_ttl_s)
        await pipe.execute()
        return stored

    async def file(self, file_id: str, tenant: str | None) -> StoredFile | None:
        """The file `file_id` of `tenant`; None when there is none (or it is another's)."""
        if not valid_file_id(file_id):
            return None
        return _file_of(file_id, tenant, await self.redis.hgetall(self.keys.file(file_id)))

    async def content(self, stored: StoredFile) -> bytes | None:
        """The bytes of `stored`; None once they have expired."""
        value = await self.redis.get(self.keys.file_content(stored.id))
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def delete_file(self, stored: StoredFile) -> None:
        """Remove `stored`: its metadata, its bytes and its place in its tenant's listing."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.file(stored.id), self.keys.file_content(stored.id))
        pipe.zrem(self.keys.tenant_files(stored.tenant), stored.id)
        await pipe.execute()

    async def files(self, tenant: str | None) -> list[StoredFile]:
        """Every file of `tenant`, newest first (those expired are dropped from its listing)."""
        index = self.keys.tenant_files(tenant)
        ids = [text(member) for member in await self.redis.zrevrange(index, 0, -1)]
        ids = [file_id for file_id in ids if valid_file_id(file_id)]
        pipe = self.redis.pipeline(transaction=False)
        for file_id in ids:
            pipe.hgetall(self.keys.file(file_id))
        found: list[StoredFile] = []
        gone: list[str] = []
        for file_id, fields in zip(ids, await pipe.execute() if ids else [], strict=True):
            stored = _file_of(file_id, tenant, fields)
            if stored is None:
                gone.append(file_id)
            else:
                found.append(stored)
        if gone:
            await self.redis.zrem(index, *gone)
        return found

    # --- batches ---------------------------------------------------------------------

    def queue_batch(self, pipe: Any, batch: FrontBatch) -> None:
        """Queue the record of a batch the front made, and its place in its tenant's
        listing, onto `pipe` (blocking or asyncio): the batch's own last transaction,
        so the front never holds a batch it cannot show."""
        head: dict[str, Any] = {
            "tenant": _tenant_field(batch.tenant),
            "input_file_id": batch.input_file_id,
            "endpoint": batch.endpoint,
            "completion_window": batch.completion_window,
            "created_at": batch.created_at,
        }
        key = self.keys.batch_api(batch.batch_id)
        index = self.keys.tenant_batches(batch.tenant)
        pipe.hset(key, mapping=cast("Mapping[Any, Any]", head))
        pipe.expire(key, self.batch_ttl_s)
        moment = self.now()  # the listing's order: finer than the object's whole seconds
        pipe.zadd(index, {batch.batch_id: moment})
        pipe.zremrangebyscore(index, "-inf", moment - self.batch_ttl_s)
        pipe.expire(index, self.batch_ttl_s)

    async def add_batch(self, batch: FrontBatch) -> None:
        """Record a batch the front made, and list it under its tenant, on its own."""
        pipe = self.redis.pipeline(transaction=True)
        self.queue_batch(pipe, batch)
        await pipe.execute()

    async def batch(self, batch_id: str, tenant: str | None) -> FrontBatch | None:
        """The front's record of batch `batch_id` of `tenant`; None when there is none."""
        if not valid_job_id(batch_id):
            return None
        fields = decoded(await self.redis.hgetall(self.keys.batch_api(batch_id)))
        if not fields or fields.get("tenant") != _tenant_field(tenant):
            return None
        return FrontBatch(
            batch_id=batch_id,
            tenant=tenant,
            input_file_id=fields.get("input_file_id", ""),
            endpoint=fields.get("endpoint", ""),
            completion_window=fields.get("completion_window", ""),
            created_at=int(fields.get("created_at", "0")),
            cancel_asked_at=_optional_int(fields, "cancel_asked_at"),
            outputs_at=_optional_int(fields, "outputs_at"),
            outputs_for=fields.get("outputs_for", ""),
            output_file_id=fields.get("output_file_id") or None,
            error_file_id=fields.get("error_file_id") or None,
        )

    async def cancel_asked(self, batch_id: str) -> int:
        """Note that a cancel was asked (the first time counts); when it was."""
        key = self.keys.batch_api(batch_id)
        await self.redis.hsetnx(key, "cancel_asked_at", int(self.now()))
        return int(text(await self.redis.hget(key, "cancel_asked_at") or b"0"))

    async def outputs_written(
        self,
        batch_id: str,
        output_file_id: str | None,
        error_file_id: str | None,
        ttl_s: int,
        *,
        ended: str = "",
    ) -> None:
        """Note the batch's output and error files (None: empty), written for its end
        `ended`, keeping the record `ttl_s`."""
        key = self.keys.batch_api(batch_id)
        fields = {
            "outputs_at": int(self.now()),
            "outputs_for": ended,
            "output_file_id": output_file_id or "",
            "error_file_id": error_file_id or "",
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=cast("Mapping[Any, Any]", fields))
        pipe.expire(key, ttl_s)
        await pipe.execute()

    async def batch_ids(self, tenant: str | None) -> list[str]:
        """The ids of the batches `tenant` made through the front, newest first."""
        members = await self.redis.zrevrange(self.keys.tenant_batches(tenant), 0, -1)
        return [text(member) for member in members]

    async def forget_batch(self, tenant: str | None, batch_id: str) -> None:
        """Drop an expired batch from its tenant's listing."""
        await self.redis.zrem(self.keys.tenant_batches(tenant), batch_id)
