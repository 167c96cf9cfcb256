"""Batch files: JSONL input read into validated requests, results written as JSONL.

Each input line is one request, in either of two shapes, told apart by a "body" key:

- OpenAI's Batch input: ``{"custom_id": "a", "method": "POST",
  "url": "/v1/chat/completions", "body": {<chat completion request>}}``;
- plain: the request itself, with an optional "custom_id" (default ``line-<n>``).

Reading is all or nothing: every bad line is collected, with its number and
reason, into one `BatchFileError`, so a file is fixed in one round and a batch is
never half-enqueued; a request over the maximum request size, when one is given,
is a bad line too. A line that repeats a key is refused (JSON would keep the last
value silently). Reading is bounded (`BatchLimits`): the file is read a line at a
time, and one too long, a file too large or more requests than allowed stop the
read at once with the bound that was passed, so `/dev/zero` or a runaway file
never fills the producer's memory. Reasons never repeat a line's text, which may hold secrets
or prompts. Results are written in OpenAI's Batch output shape, one line per item.
Nothing here touches Redis or Celery.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from pydantic import ValidationError

from dispatcher.config.problems import describe
from dispatcher.errors import InvalidRequest
from dispatcher.models import BatchItem, JobError, JobStatus, Request
from dispatcher.redaction import redact
from dispatcher.routing.request_size import request_size_problem
from producer.openai_shapes import chat_completion

__all__ = [
    "CHAT_COMPLETIONS_URL",
    "MAX_REPORTED",
    "BatchFileError",
    "BatchLimits",
    "BatchLine",
    "output_record",
    "parse_batch_lines",
    "read_batch_file",
    "requests_as_lines",
    "write_results",
]

# Enough to show the pattern of a mistake without burying the terminal in it.
MAX_REPORTED = 20
# The only endpoint we run; OpenAI batch lines name the endpoint they are meant for.
CHAT_COMPLETIONS_URL = "/v1/chat/completions"
# Longer custom ids and urls are cut in messages: a reason names a value, it does not copy it.
MAX_SHOWN_CHARS = 60

_OPENAI_KEYS = frozenset({"custom_id", "method", "url", "body"})
_JSON_TYPES: dict[type, str] = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


@dataclass(frozen=True)
class BatchLimits:
    """How much one batch may hold: requests, bytes of its file, bytes of one request."""

    max_items: int | None = None
    max_file_bytes: int | None = None
    max_request_bytes: int | None = None

    @property
    def max_line_bytes(self) -> int | None:
        """The longest line worth reading: a request at its maximum, in OpenAI's envelope."""
        if self.max_request_bytes is None:
            return self.max_file_bytes
        return 2 * self.max_request_bytes + LINE_ENVELOPE_BYTES


# Room for a batch line's envelope (custom_id, method, url) and JSON escaping around a request.
LINE_ENVELOPE_BYTES = 64 * 1024


@dataclass(frozen=True)
class BatchLine:
    """One request of a batch, with where it came from and the id the caller gave it."""

    line: int
    custom_id: str
    request: Request


class BatchFileError(InvalidRequest):
    """Every bad line, with its line number and reason; nothing was enqueued."""

    def __init__(self, problems: Iterable[tuple[int, str]], unit: str = "line") -> None:
        # A bad file tends to repeat one mistake: mask each distinct reason only once.
        masked: dict[str, str] = {}
        self.problems: list[tuple[int, str]] = []
        for number, reason in problems:
            if reason not in masked:
                masked[reason] = redact(reason)
            self.problems.append((number, masked[reason]))
        self.unit = unit
        count = len(self.problems)
        what = "batch file" if unit == "line" else "batch"
        heading = f"invalid {what} ({count} bad {unit}{'s' if count != 1 else ''}):"
        shown = [f"{unit} {number}: {reason}" for number, reason in self.problems[:MAX_REPORTED]]
        if count > MAX_REPORTED:
            shown.append(f"... and {count - MAX_REPORTED} more")
        super().__init__("\n  ".join([heading, *shown]))

    def __reduce__(self) -> tuple[Any, ...]:
        return (BatchFileError, (self.problems, self.unit))

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "problems": [list(problem) for problem in self.problems]}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _shown(value: str) -> str:
    if len(value) > MAX_SHOWN_CHARS:
        value = value[: MAX_SHOWN_CHARS - 3] + "..."
    return repr(value)


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON has not; they would not survive Redis.
    raise ValueError(f"{name} is not a JSON value")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {_shown(key)} in an object")
            seen.add(key)
    return found


# One decoder for every line: `json.loads` with an option would build a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)


def _custom_id_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"custom_id must be a string, not {_json_type(value)}"
    if not value:
        return "custom_id must not be empty"
    return None


def _validate(fields: dict[str, Any], prefix: str = "") -> tuple[Request | None, list[str]]:
    try:
        return Request.model_validate(fields), []
    except ValidationError as exc:
        problems = describe(exc)
    if prefix:
        problems = [_under(prefix, problem) for problem in problems]
    return None, problems


def _under(prefix: str, problem: str) -> str:
    """`problem` (``path: reason``, a path inside the body) with its path under `prefix`."""
    top = "(top level)"
    return prefix + problem[len(top) :] if problem.startswith(top) else f"{prefix}.{problem}"


def _openai_line(data: dict[str, Any]) -> tuple[Any, Request | None, list[str]]:
    """custom_id, request and problems of a line in OpenAI's Batch input shape."""
    problems: list[str] = []
    for key in sorted(data.keys() - _OPENAI_KEYS):
        problems.append(
            f"unknown field {_shown(key)}; accepted fields: {', '.join(sorted(_OPENAI_KEYS))}"
        )
    custom_id = data.get("custom_id")
    if "custom_id" not in data:
        problems.append("custom_id is required")
    elif (problem := _custom_id_problem(custom_id)) is not None:
        problems.append(problem)
    if "method" in data and data["method"] != "POST":
        method = data["method"]
        shown = _shown(method) if isinstance(method, str) else _json_type(method)
        problems.append(f"method must be 'POST', not {shown}")
    if "url" in data and data["url"] != CHAT_COMPLETIONS_URL:
        url = data["url"]
        shown = _shown(url) if isinstance(url, str) else _json_type(url)
        problems.append(
            f"url {shown} is not supported: only chat completions ({CHAT_COMPLETIONS_URL!r}) run"
        )
    body = data["body"]
    request = None
    if isinstance(body, dict):
        request, invalid = _validate(body, prefix="body")
        problems.extend(invalid)
    else:
        problems.append(f"body must be a JSON object, not {_json_type(body)}")
    return custom_id, request, problems


def _plain_line(data: dict[str, Any], default_id: str) -> tuple[Any, Request | None, list[str]]:
    """custom_id, request and problems of a line that is a request itself."""
    problems: list[str] = []
    custom_id = data.pop("custom_id", default_id)
    if (problem := _custom_id_problem(custom_id)) is not None:
        problems.append(problem)
    request, invalid = _validate(data)
    problems.extend(invalid)
    return custom_id, request, problems


def _collect(
    entries: Iterable[tuple[int, Any, Request | None, list[str]]],
    unit: str,
    limits: BatchLimits,
) -> list[BatchLine]:
    """The batch lines, or every problem (duplicate ids and sizes included) raised as one error.

    More requests than `limits.max_items` stops the reading at once, with that one problem.
    """
    max_request_bytes = limits.max_request_bytes
    lines: list[BatchLine] = []
    bad: list[tuple[int, str]] = []
    first_seen: dict[str, int] = {}
    seen_any = False
    for count, (number, custom_id, request, problems) in enumerate(entries, start=1):
        seen_any = True
        if limits.max_items is not None and count > limits.max_items:
            raise BatchFileError(
                [
                    (
                        number,
                        f"more than {limits.max_items:,} requests (LLMDISPATCH_MAX_BATCH_ITEMS)",
                    )
                ],
                unit=unit,
            )
        if isinstance(custom_id, str) and custom_id:
            first = first_seen.setdefault(custom_id, number)
            if first != number:
                duplicate = f"duplicate custom_id {_shown(custom_id)} (first on {unit} {first})"
                problems.insert(0, duplicate)
        if request is not None and max_request_bytes is not None:
            too_large = request_size_problem(request, max_request_bytes)
            if too_large is not None:
                problems.append(too_large)
        if problems:
            bad.append((number, "; ".join(problems)))
        elif request is not None:
            lines.append(BatchLine(line=number, custom_id=custom_id, request=request))
    if not seen_any:
        bad.append((0, "the file holds no requests" if unit == "line" else "the batch is empty"))
    if bad:
        raise BatchFileError(bad, unit=unit)
    return lines


def _parsed_lines(
    lines: Iterable[bytes | OverlongLine],
) -> Iterable[tuple[int, Any, Request | None, list[str]]]:
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, OverlongLine):
            yield number, None, None, [raw.problem]
            continue
        try:
            # A byte order mark may open the file (Windows editors write one); drop it.
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            yield number, None, None, ["not valid UTF-8"]
            continue
        if not text or text.isspace():
            continue
        try:
            data = _DECODER.decode(text)
        except json.JSONDecodeError as exc:
            # Only the parser's reason and column: the line itself may hold a secret.
            yield number, None, None, [f"not valid JSON: {exc.msg} at column {exc.pos + 1}"]
            continue
        except ValueError as exc:  # NaN or Infinity, or a repeated key: refused by the hooks
            yield number, None, None, [f"not valid JSON: {exc}"]
            continue
        except RecursionError:
            yield number, None, None, ["not valid JSON: nested too deeply"]
            continue
        if not isinstance(data, dict):
            yield number, None, None, [f"not a JSON object, but {_json_type(data)}"]
        elif "body" in data:
            yield number, *_openai_line(data)
        else:
            yield number, *_plain_line(data, f"line-{number}")


def parse_batch_lines(
    lines: Iterable[bytes | OverlongLine], *, limits: BatchLimits | None = None
) -> list[BatchLine]:
    """The requests of a JSONL batch, one per non-blank line, in order.

    `limits`: a request whose JSON is over `max_request_bytes` is a bad line
    (`dispatcher.routing.request_size`); more than `max_items` requests stop the reading.

    Raises:
        BatchFileError: some line is bad, or there is none; lists every bad line.
    """
    return _collect(_parsed_lines(lines), "line", limits or BatchLimits())


def read_batch_file(
    path: str | os.PathLike[str], *, limits: BatchLimits | None = None
) -> list[BatchLine]:
    """The requests of the JSONL batch file at `path` (see `parse_batch_lines`), read a
    line at a time within `limits.max_file_bytes` and `limits.max_line_bytes`."""
    limits = limits or BatchLimits()
    with open(path, "rb") as file:
        return parse_batch_lines(bounded_lines(file, limits), limits=limits)


@dataclass(frozen=True)
class OverlongLine:
    """A line too long to be one request: its bytes were skipped, not kept."""

    problem: str


def bounded_lines(file: IO[bytes], limits: BatchLimits) -> Iterator[bytes | OverlongLine]:
    """`file`'s lines, each read with a bound.

    A line past `limits.max_line_bytes` is skipped to its end and stands as an
    `OverlongLine`, so the lines after it are still checked; a file past
    `limits.max_file_bytes` stops the read, and so does a long line when no
    file bound limits how much skipping it may take.
    """
    longest = limits.max_line_bytes
    total = 0
    number = 0

    def read() -> bytes:
        nonlocal total
        chunk = file.readline(-1 if longest is None else longest + 1)
        total += len(chunk)
        if limits.max_file_bytes is not None and total > limits.max_file_bytes:
            raise BatchFileError(
                [(number, f"the file is larger than {limits.max_file_bytes:,} bytes "
                  "(LLMDISPATCH_MAX_BATCH_BYTES)")]
            )  # fmt: skip
        return chunk

    while True:
        number += 1
        line = read()
        if not line:
            return
        if longest is None or len(line) <= longest:
            yield line
            continue
        problem = f"longer than {longest:,} bytes: not one request"
        if limits.max_file_bytes is None:  # nothing bounds the skip: stop here
            raise BatchFileError([(number, problem)])
        while not line.endswith(b"\n") and (line := read()):
            pass  # the rest of the long line, a bounded chunk at a time
        yield OverlongLine(problem)


def _items(
    requests: Sequence[Request | Mapping[str, Any]],
) -> Iterable[tuple[int, Any, Request | None, list[str]]]:
    for number, item in enumerate(requests, start=1):
        default_id = f"request-{number}"
        if isinstance(item, Request):
            yield number, default_id, item, []
        elif isinstance(item, Mapping):
            yield number, *_plain_line(dict(item), default_id)
        else:
            problem = f"a request is a Request or a dict, not {type(item).__name__}"
            yield number, None, None, [problem]


def requests_as_lines(
    requests: Sequence[Request | Mapping[str, Any]], *, limits: BatchLimits | None = None
) -> list[BatchLine]:
    """`requests` as batch lines numbered from 1, with ids ``request-<n>`` unless given.

    A mapping may carry its own "custom_id"; `limits` as for `parse_batch_lines`.

    Raises:
        BatchFileError: some item is invalid, or there is none; lists every bad item.
    """
    if isinstance(requests, str | bytes) or not isinstance(requests, Sequence):
        raise TypeError(f"requests must be a list of requests, not {type(requests).__name__}")
    return _collect(_items(requests), "item", limits or BatchLimits())


def _failure(item: BatchItem) -> tuple[str, str]:
    """The error code and message of an item without a response."""
    error: JobError | None = item.error
    if item.status is None:
        return "expired", error.message if error else "the job's record expired"
    if item.status is JobStatus.CANCELLED:
        return "cancelled", error.message if error else "the job was cancelled"
    if error is not None:
        return error.kind, error.message
    if not item.status.is_terminal:
        return "not_finished", f"the job is still {item.status.value}"
    return "no_result", f"the job ended {item.status.value} without a result"


def output_record(item: BatchItem) -> dict[str, Any]:
    """One item's result in OpenAI's Batch output shape, plus our vendor, cost and latency."""
    record: dict[str, Any] = {"id": f"batch_req_{item.job_id}", "custom_id": item.custom_id}
    if item.status is JobStatus.SUCCEEDED and item.response is not None:
        record["response"] = {
            "status_code": 200,
            "request_id": item.response.vendor_request_id or item.job_id,
            "body": chat_completion(item.job_id, item.response),
        }
        record["error"] = None
        return record
    code, message = _failure(item)
    error = item.error
    if error is not None and error.status_code is not None:
        # The vendor answered with an HTTP error: pass it on as OpenAI would.
        record["response"] = {
            "status_code": error.status_code,
            "request_id": item.job_id,
            "body": {"error": {"message": error.message, "type": error.kind, "code": error.kind}},
        }
    else:
        record["response"] = None
    record["error"] = {"code": code, "message": message}
    return record


def write_results(items: Iterable[BatchItem], out: IO[str]) -> int:
    """Write one JSON line per item to `out`, in order; returns how many were written."""
    count = 0
    for item in items:
        out.write(json.dumps(output_record(item), ensure_ascii=False, separators=(",", ":")))
        out.write("\n")
        count += 1
    return count
