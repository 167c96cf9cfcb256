"""OpenAI's Batch and list objects from our batch records: pure functions, no Redis.

A Batch object is our `BatchRecord` (counts, times, tokens) joined with what
the front kept of the batch (`FrontBatch`: input file, endpoint, window, when a
cancel was asked, its output files). The status is read from both:

| our batch | OpenAI status |
| --- | --- |
| items pending, no cancel asked | `in_progress` |
| items pending, a cancel asked or under way | `cancelling` |
| every item ended, not cancelled | `completed` |
| every item ended after a cancel | `cancelled` |

`validating` and `failed` never show: a file is checked at upload and the batch
routed at creation, so a bad one is refused there with a 400. `finalizing` and
`expired` never show either: output files are written the first time an ended
batch is looked at, and items are not expired by their window.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from dispatcher.models import BatchItem, BatchRecord
from producer.batch_files import CHAT_COMPLETIONS_URL, output_record
from producer.http_api.chat_request import BadChatRequest
from producer.http_api.front_store import FrontBatch

__all__ = [
    "BATCH_PREFIX",
    "COMPLETION_WINDOW",
    "BadRequest",
    "after_index",
    "batch_object",
    "batch_of_file",
    "create_fields",
    "error_file_id",
    "list_object",
    "openai_status",
    "output_file_id",
    "output_files",
    "parse_limit",
    "whole_number",
]

BATCH_PREFIX = "batch_"
# The only window OpenAI offers; ours is not enforced (items run as soon as they can).
COMPLETION_WINDOW = "24h"
WINDOW_S = 86_400
# OpenAI's bounds on metadata: 16 pairs, keys up to 64 characters, values up to 512.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
_CREATE_FIELDS = frozenset({"input_file_id", "endpoint", "completion_window", "metadata"})


class BadRequest(BadChatRequest):
    """A Files or Batches request the API refuses: a 400 naming the field (`param`)."""


def openai_status(record: BatchRecord, *, cancel_asked: bool = False) -> str:
    """OpenAI's status of a batch (see the table above)."""
    cancelled = record.cancelled_at is not None
    if record.done:
        return "cancelled" if cancelled else "completed"
    return "cancelling" if cancelled or cancel_asked else "in_progress"


def _epoch(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def output_file_id(batch_id: str) -> str:
    """The id of the batch's output file (its succeeded items)."""
    return f"file-{batch_id}-output"


def error_file_id(batch_id: str) -> str:
    """The id of the batch's error file (its failed and cancelled items)."""
    return f"file-{batch_id}-errors"


def batch_of_file(file_id: str) -> str | None:
    """The batch whose output or error file `file_id` names; None for any other id."""
    for suffix in ("-output", "-errors"):
        if file_id.endswith(suffix):
            return file_id.removeprefix("file-").removesuffix(suffix)
    return None


def batch_object(record: BatchRecord, front: FrontBatch) -> dict[str, Any]:
    """OpenAI's Batch object for `record`, a batch the front made (`front`)."""
    status = openai_status(record, cancel_asked=front.cancel_asked_at is not None)
    finished = _epoch(record.finished_at) if record.done else None
    counts = record.counts
    cancelling = status in ("cancelling", "cancelled")
    return {
        "id": BATCH_PREFIX + record.batch_id,
        "object": "batch",
        "endpoint": front.endpoint,
        "errors": None,
        "input_file_id": front.input_file_id,
        "completion_window": front.completion_window,
        "status": status,
        "output_file_id": front.output_file_id,
        "error_file_id": front.error_file_id,
        "created_at": front.created_at,
        "in_progress_at": front.created_at,  # checked and queued as it was made
        "expires_at": front.created_at + WINDOW_S,
        "finalizing_at": finished,
        "completed_at": finished if status == "completed" else None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": (
            (front.cancel_asked_at or _epoch(record.cancelled_at)) if cancelling else None
        ),
        "cancelled_at": finished if status == "cancelled" else None,
        "request_counts": {
            "total": counts.total,
            "completed": counts.succeeded,
            # Cancelled items are in the error file too, so the counts add up once it ends.
            "failed": counts.failed + counts.cancelled,
        },
        "usage": {
            "input_tokens": record.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": record.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": record.prompt_tokens + record.completion_tokens,
        },
        "metadata": dict(record.metadata) or None,
    }


def output_files(items: Iterable[BatchItem]) -> tuple[bytes, bytes]:
    """The output file (succeeded items) and error file (the others), in input order,
    one line each in OpenAI's Batch output format."""
    succeeded: list[str] = []
    failed: list[str] = []
    for item in items:
        record = output_record(item)
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        (succeeded if record["error"] is None else failed).append(line)
    return "".join(succeeded).encode(), "".join(failed).encode()


def create_fields(body: Any) -> tuple[str, str, dict[str, str]]:
    """The input file id, completion window and metadata of a `POST /v1/batches` body.

    Raises:
        BadRequest: not an object, an unknown or missing field, an endpoint other
            than chat completions, a window other than 24h, or metadata out of bounds.
    """
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    for name in body:
        if name not in _CREATE_FIELDS:
            accepted = ", ".join(sorted(_CREATE_FIELDS))
            raise BadRequest(f"unknown field {name!r}; accepted fields: {accepted}", str(name))
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise BadRequest(
            "input_file_id: the id of a file uploaded for purpose batch", "input_file_id"
        )
    if body.get("endpoint") != CHAT_COMPLETIONS_URL:
        raise BadRequest(
            f"endpoint: only {CHAT_COMPLETIONS_URL} is supported, not {body.get('endpoint')!r}",
            "endpoint",
        )
    window = body.get("completion_window", COMPLETION_WINDOW)
    if window != COMPLETION_WINDOW:
        raise BadRequest(
            f"completion_window: only {COMPLETION_WINDOW!r} is supported", "completion_window"
        )
    return file_id, window, _metadata(body.get("metadata"))


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BadRequest("metadata: an object of strings", "metadata")
    if len(value) > MAX_METADATA_PAIRS:
        raise BadRequest(f"metadata: at most {MAX_METADATA_PAIRS} pairs", "metadata")
    for key, text in value.items():
        if not isinstance(text, str) or len(key) > MAX_METADATA_KEY:
            raise BadRequest(
                f"metadata: keys of up to {MAX_METADATA_KEY} characters, string values",
                "metadata",
            )
        if len(text) > MAX_METADATA_VALUE:
            raise BadRequest(f"metadata.{key}: at most {MAX_METADATA_VALUE} characters", "metadata")
    return dict(value)


def whole_number(raw: str) -> int | None:
    """`raw` as a whole number when it is ASCII digits only; None otherwise (`str.isdigit`
    also takes digits such as "¹" that `int` refuses)."""
    return int(raw) if raw.isascii() and raw.isdigit() else None


def parse_limit(raw: str | None, *, default: int, maximum: int) -> int:
    """A list's `limit` query parameter, from 1 to `maximum`.

    Raises:
        BadRequest: not a whole number in that range.
    """
    if raw is None:
        return default
    limit = whole_number(raw)
    if limit is None or not 1 <= limit <= maximum:
        raise BadRequest(f"limit: a whole number from 1 to {maximum}", "limit")
    return limit


def after_index(ids: Sequence[str], after: str | None) -> int | None:
    """Where a page starts in `ids`: just past `after` (0 without); None when `after`
    is not among them (it expired, or was never listed)."""
    if after is None:
        return 0
    try:
        return ids.index(after) + 1
    except ValueError:
        return None


def list_object(objects: Sequence[Mapping[str, Any]], limit: int) -> dict[str, Any]:
    """OpenAI's list object for a page: the first `limit` of `objects`, and whether
    there are more (`objects` holds one more than the page when there are)."""
    data = list(objects[:limit])
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(objects) > limit,
    }
