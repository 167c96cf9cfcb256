"""Batch files: JSONL input read into requests (all or nothing), results written as JSONL."""

from __future__ import annotations

import io
import json
import pickle
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dispatcher import InvalidRequest, Message, Request, ToolCall
from dispatcher.models import BatchItem, FinishReason, JobError, JobStatus, Response, Usage
from producer.batch_files import (
    MAX_REPORTED,
    BatchFileError,
    BatchLimits,
    BatchLine,
    bounded_lines,
    output_record,
    parse_batch_lines,
    read_batch_file,
    requests_as_lines,
    write_results,
)

CHAT_URL = "/v1/chat/completions"
SECRET = "sk-proj-a-very-secret-key-0123456789"
BODY: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi."}]}


def jsonl(*records: Any) -> list[bytes]:
    """Each record as one line of a JSONL file, as a binary file iterates them."""
    return [
        (record if isinstance(record, bytes) else json.dumps(record).encode()) + b"\n"
        for record in records
    ]


def openai_line(custom_id: str, **overrides: Any) -> dict[str, Any]:
    """One line of OpenAI's Batch input format; overrides replace or add top-level keys."""
    return {"custom_id": custom_id, "method": "POST", "url": CHAT_URL, "body": BODY, **overrides}


def problems_of(lines: list[bytes]) -> list[tuple[int, str]]:
    with pytest.raises(BatchFileError) as caught:
        parse_batch_lines(lines)
    return caught.value.problems


# --- input formats -------------------------------------------------------------------


def test_openai_format_lines_become_requests_with_their_custom_ids() -> None:
    body = {**BODY, "max_tokens": 50, "temperature": 0.2}
    lines = parse_batch_lines(jsonl(openai_line("a", body=body), openai_line("b")))

    assert [(line.line, line.custom_id) for line in lines] == [(1, "a"), (2, "b")]
    assert lines[0].request == Request.model_validate(body)
    assert lines[0].request.max_tokens == 50
    assert lines[1].request.messages == [Message(role="user", content="Hi.")]


def test_openai_format_without_method_and_url_is_accepted() -> None:
    (line,) = parse_batch_lines(jsonl({"custom_id": "only-body", "body": BODY}))

    assert line.custom_id == "only-body"
    assert line.request.model == "gpt-4o-mini"


def test_plain_lines_are_requests_with_a_default_or_their_own_custom_id() -> None:
    lines = parse_batch_lines(jsonl(BODY, {**BODY, "custom_id": "mine", "priority": 2}))

    assert [line.custom_id for line in lines] == ["line-1", "mine"]
    # The custom id is taken out before validation, so it never reaches the request.
    assert lines[1].request == Request.model_validate({**BODY, "priority": 2})


def test_one_file_may_mix_both_formats() -> None:
    lines = parse_batch_lines(jsonl(openai_line("x"), BODY, {**BODY, "model": "claude-3-5-haiku"}))

    assert [(line.line, line.custom_id, line.request.model) for line in lines] == [
        (1, "x", "gpt-4o-mini"),
        (2, "line-2", "gpt-4o-mini"),
        (3, "line-3", "claude-3-5-haiku"),
    ]


def test_blank_lines_are_skipped_but_still_counted() -> None:
    raw = [b"\n", *jsonl(BODY), b"   \t \n", b"\r\n", *jsonl(openai_line("z")), b""]

    lines = parse_batch_lines(raw)

    assert [(line.line, line.custom_id) for line in lines] == [(2, "line-2"), (5, "z")]


def test_windows_line_endings_and_a_byte_order_mark_are_read() -> None:
    raw = b"\xef\xbb\xbf" + json.dumps(openai_line("first")).encode() + b"\r\n"
    raw += json.dumps(BODY).encode() + b"\r\n"

    lines = parse_batch_lines(raw.splitlines(keepends=True))

    assert [(line.line, line.custom_id) for line in lines] == [(1, "first"), (2, "line-2")]


def test_read_batch_file_reads_the_file_in_binary(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    content = "\ufeff" + json.dumps(openai_line("é-1", body={**BODY, "user": "zoë"}))
    path.write_bytes((content + "\r\n\r\n" + json.dumps(BODY) + "\r\n").encode())

    lines = read_batch_file(path)

    assert [(line.line, line.custom_id) for line in lines] == [(1, "é-1"), (3, "line-3")]
    assert lines[0].request.user == "zoë"
    assert read_batch_file(str(path)) == lines


def test_ten_thousand_lines_parse_quickly() -> None:
    body = {**BODY, "max_tokens": 100, "metadata": {"team": "search"}}
    raw = jsonl(*(openai_line(f"request-{n}", body=body) for n in range(10_000)))

    started = time.perf_counter()
    lines = parse_batch_lines(raw)
    elapsed_s = time.perf_counter() - started

    assert len(lines) == 10_000
    assert lines[-1] == BatchLine(10_000, "request-9999", Request.model_validate(body))
    # Takes about 0.2 s; the bound only catches something gone badly wrong (e.g. quadratic).
    assert elapsed_s < 3.0


# --- problems ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        pytest.param(b"\xff\xfe{}", "not valid UTF-8", id="not-utf8"),
        pytest.param(
            b'{"model": "m",',
            "not valid JSON: Expecting property name enclosed in double quotes at column 15",
            id="not-json",
        ),
        pytest.param(b"[1, 2]", "not a JSON object, but an array", id="array"),
        pytest.param(b'"text"', "not a JSON object, but a string", id="string"),
        pytest.param(
            b'{"model": "m", "temperature": NaN}',
            "not valid JSON: NaN is not a JSON value",
            id="nan",
        ),
        pytest.param({"body": BODY}, "custom_id is required", id="missing-custom-id"),
        pytest.param(openai_line(""), "custom_id must not be empty", id="empty-custom-id"),
        pytest.param(
            openai_line(7), "custom_id must be a string, not a number", id="number-custom-id"
        ),
        pytest.param(
            {**BODY, "custom_id": None}, "custom_id must be a string, not null", id="plain-null-id"
        ),
        pytest.param(
            openai_line("a", method="GET"), "method must be 'POST', not 'GET'", id="method"
        ),
        pytest.param(
            openai_line("a", url="/v1/embeddings"),
            "url '/v1/embeddings' is not supported: only chat completions "
            "('/v1/chat/completions') run",
            id="url",
        ),
        pytest.param(
            openai_line("a", priority=1),
            "unknown field 'priority'; accepted fields: body, custom_id, method, url",
            id="unknown-top-level-key",
        ),
        pytest.param(
            openai_line("a", body=[BODY]), "body must be a JSON object, not an array", id="body"
        ),
        pytest.param(
            openai_line("a", body={"messages": BODY["messages"]}),
            "body.model: is required",
            id="body-missing-field",
        ),
        pytest.param(
            {"model": "m", "messages": [{"role": "bot", "content": "x"}]},
            "messages[0].role: must be 'system', 'user', 'assistant' or 'tool'",
            id="plain-invalid-request",
        ),
    ],
)
def test_each_kind_of_bad_line_is_reported_on_its_own_line_number(
    bad: bytes | dict[str, Any], reason: str
) -> None:
    raw = [*jsonl(BODY), b"\n", *jsonl(bad), *jsonl(BODY)]

    assert problems_of(raw) == [(3, reason)]


def test_a_body_field_we_do_not_support_is_named_under_body() -> None:
    (problem,) = problems_of(jsonl(openai_line("a", body={**BODY, "n": 2, "functions": []})))

    number, reason = problem
    assert number == 1
    assert reason.startswith("body.n: unknown field 'n' for Request; accepted fields: ")
    assert "; body.functions: unknown field 'functions' for Request" in reason


def test_every_problem_of_one_line_is_joined_into_its_reason() -> None:
    line = openai_line("", url="/v1/embeddings", body={"model": "", "messages": BODY["messages"]})

    (problem,) = problems_of(jsonl(line))

    assert problem[1].split("; ") == [
        "custom_id must not be empty",
        "url '/v1/embeddings' is not supported: only chat completions ('/v1/chat/completions') run",
        "body.model: String should have at least 1 character",
    ]


def test_a_bad_json_line_is_never_echoed() -> None:
    cut_short = f'{{"model": "m", "messages": "{SECRET}" '

    with pytest.raises(BatchFileError) as caught:
        parse_batch_lines(jsonl(BODY, cut_short.encode()))

    # The column is where the line ends, after the space that follows the secret.
    column = len(cut_short) + 1
    assert caught.value.problems == [
        (2, f"not valid JSON: Expecting ',' delimiter at column {column}")
    ]
    assert SECRET not in str(caught.value)


def test_several_bad_lines_are_reported_together_in_file_order() -> None:
    raw = jsonl(BODY, b"{", openai_line("a", url="/v1/embeddings"), BODY, b"[]", b"\x80")

    with pytest.raises(BatchFileError) as caught:
        parse_batch_lines(raw)

    error = caught.value
    assert [number for number, _ in error.problems] == [2, 3, 5, 6]
    assert str(error).splitlines() == [
        "invalid batch file (4 bad lines):",
        "  line 2: not valid JSON: Expecting property name enclosed in double quotes at column 2",
        "  line 3: url '/v1/embeddings' is not supported: only chat completions "
        "('/v1/chat/completions') run",
        "  line 5: not a JSON object, but an array",
        "  line 6: not valid UTF-8",
    ]
    assert error.message == str(error)


def test_a_single_bad_line_heading_is_singular() -> None:
    with pytest.raises(BatchFileError, match=r"^invalid batch file \(1 bad line\):\n  line 1: "):
        parse_batch_lines([b"null"])


def test_more_than_max_reported_bad_lines_are_cut_with_a_count() -> None:
    raw = [*jsonl(BODY), *([b"[]\n"] * (MAX_REPORTED + 5))]

    with pytest.raises(BatchFileError) as caught:
        parse_batch_lines(raw)

    error = caught.value
    assert len(error.problems) == MAX_REPORTED + 5
    assert error.problems[-1] == (MAX_REPORTED + 6, "not a JSON object, but an array")
    shown = str(error).splitlines()
    assert shown[0] == f"invalid batch file ({MAX_REPORTED + 5} bad lines):"
    assert shown[1] == "  line 2: not a JSON object, but an array"
    assert shown[MAX_REPORTED] == f"  line {MAX_REPORTED + 1}: not a JSON object, but an array"
    assert shown[-1] == "  ... and 5 more"
    assert len(shown) == 1 + MAX_REPORTED + 1


def test_a_duplicate_custom_id_names_the_line_it_was_first_on() -> None:
    raw = jsonl(BODY, openai_line("dup"), BODY, openai_line("dup"), {**BODY, "custom_id": "dup"})

    assert problems_of(raw) == [
        (4, "duplicate custom_id 'dup' (first on line 2)"),
        (5, "duplicate custom_id 'dup' (first on line 2)"),
    ]


def test_an_explicit_custom_id_may_clash_with_a_default_one() -> None:
    assert problems_of(jsonl({**BODY, "custom_id": "line-2"}, BODY)) == [
        (2, "duplicate custom_id 'line-2' (first on line 1)")
    ]


def test_a_duplicate_custom_id_is_reported_even_when_the_first_line_is_bad() -> None:
    raw = jsonl(openai_line("x", body={}), openai_line("x"))

    problems = problems_of(raw)

    assert problems[0][0] == 1
    assert problems[0][1].startswith("body.model: is required")
    assert problems[1] == (2, "duplicate custom_id 'x' (first on line 1)")


@pytest.mark.parametrize("raw", [[], [b"\n", b"  \r\n", b"\t\n"], [b"\xef\xbb\xbf\r\n"]])
def test_a_file_without_requests_is_an_error(raw: list[bytes]) -> None:
    with pytest.raises(BatchFileError) as caught:
        parse_batch_lines(raw)

    assert caught.value.problems == [(0, "the file holds no requests")]


def test_an_empty_file_on_disk_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")

    with pytest.raises(BatchFileError, match="the file holds no requests"):
        read_batch_file(path)


def test_batch_file_error_is_an_invalid_request_that_survives_pickling() -> None:
    error = BatchFileError([(3, "not valid UTF-8"), (9, "custom_id is required")])

    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes)

    assert isinstance(error, InvalidRequest)
    assert isinstance(error, ValueError)
    assert not error.retryable
    assert isinstance(copy, BatchFileError)
    assert copy.problems == error.problems
    assert str(copy) == str(error)
    assert error.to_dict()["problems"] == [[3, "not valid UTF-8"], [9, "custom_id is required"]]


def test_a_secret_in_a_problem_is_masked() -> None:
    error = BatchFileError([(1, f"duplicate custom_id 'Bearer {SECRET}' (first on line 1)")])

    assert SECRET not in str(error)
    assert SECRET not in error.problems[0][1]


# --- requests given as a list ---------------------------------------------------------


def test_requests_as_lines_numbers_items_and_gives_default_ids(
    make_request: Callable[..., Request],
) -> None:
    first = make_request(model="claude-3-5-haiku")

    lines = requests_as_lines([first, BODY])

    assert lines == [
        BatchLine(1, "request-1", first),
        BatchLine(2, "request-2", Request.model_validate(BODY)),
    ]


def test_requests_as_lines_takes_a_custom_id_from_a_mapping() -> None:
    item = {**BODY, "custom_id": "own"}

    (line,) = requests_as_lines([item])

    assert line.custom_id == "own"
    assert line.request == Request.model_validate(BODY)
    assert item["custom_id"] == "own"  # the caller's dict is left as it was


def test_requests_as_lines_reports_every_bad_item_by_position(
    make_request: Callable[..., Request],
) -> None:
    items: list[Any] = [
        make_request(),
        {"model": "m"},
        {**BODY, "custom_id": "request-1"},
        "not a request",
    ]

    with pytest.raises(BatchFileError) as caught:
        requests_as_lines(items)

    error = caught.value
    assert error.unit == "item"
    assert error.problems == [
        (2, "messages: is required"),
        (3, "duplicate custom_id 'request-1' (first on item 1)"),
        (4, "a request is a Request or a dict, not str"),
    ]
    assert str(error).splitlines()[:2] == [
        "invalid batch (3 bad items):",
        "  item 2: messages: is required",
    ]


def test_requests_as_lines_refuses_an_empty_list() -> None:
    with pytest.raises(BatchFileError) as caught:
        requests_as_lines([])

    assert caught.value.problems == [(0, "the batch is empty")]


@pytest.mark.parametrize("wrong", ["gpt-4o-mini", BODY])
def test_requests_as_lines_refuses_something_that_is_not_a_list(wrong: Any) -> None:
    with pytest.raises(TypeError, match="requests must be a list of requests"):
        requests_as_lines(wrong)


# --- results ---------------------------------------------------------------------------

CREATED_AT = datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)


def reply(**overrides: Any) -> Response:
    fields: dict[str, Any] = {
        "content": "Hello, wörld.",
        "usage": Usage(prompt_tokens=12, completion_tokens=3),
        "model": "gpt-4o-mini-2024-07-18",
        "vendor": "openai",
        "created_at": CREATED_AT,
        "latency_ms": 321.5,
        "cost_usd": 0.00042,
        "vendor_request_id": "req_abc",
    }
    fields.update(overrides)
    return Response(**fields)


def item(**overrides: Any) -> BatchItem:
    fields: dict[str, Any] = {"index": 0, "custom_id": "request-1", "job_id": "j1"}
    fields.update(overrides)
    return BatchItem(**fields)


def test_a_success_is_written_as_an_openai_chat_completion() -> None:
    record = output_record(item(status=JobStatus.SUCCEEDED, response=reply()))

    assert record == {
        "id": "batch_req_j1",
        "custom_id": "request-1",
        "response": {
            "status_code": 200,
            "request_id": "req_abc",
            "body": {
                "id": "chatcmpl-j1",
                "object": "chat.completion",
                "created": int(CREATED_AT.timestamp()),
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Hello, wörld."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
                "x_llmdispatch": {
                    "job_id": "j1",
                    "vendor": "openai",
                    "cost_usd": 0.00042,
                    "latency_ms": 321.5,
                },
            },
        },
        "error": None,
    }


def test_a_tool_turn_is_written_with_its_calls_token_details_and_vendor_state() -> None:
    call = ToolCall(id="call_1", function={"name": "get_weather", "arguments": '{"city":"Paris"}'})
    response = reply(
        content="",
        tool_calls=[call],
        finish_reason=FinishReason.TOOL_CALLS,
        usage=Usage(
            prompt_tokens=12, completion_tokens=3, cached_prompt_tokens=8, reasoning_tokens=2
        ),
        vendor_state={"signature": "abc"},
    )

    body = output_record(item(status=JobStatus.SUCCEEDED, response=response))["response"]["body"]

    assert body["choices"][0] == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        "finish_reason": "tool_calls",
    }
    assert body["usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 8},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    assert body["x_llmdispatch"]["vendor_state"] == {"signature": "abc"}


def test_a_success_without_a_vendor_request_id_uses_the_job_id() -> None:
    record = output_record(item(status=JobStatus.SUCCEEDED, response=reply(vendor_request_id=None)))

    assert record["response"]["request_id"] == "j1"


@pytest.mark.parametrize(
    ("finish_reason", "openai_reason"),
    [
        (FinishReason.STOP, "stop"),
        (FinishReason.LENGTH, "length"),
        (FinishReason.CONTENT_FILTER, "content_filter"),
        (FinishReason.TOOL_CALLS, "tool_calls"),
        (FinishReason.ERROR, "stop"),
    ],
)
def test_finish_reasons_map_to_openai_words(
    finish_reason: FinishReason, openai_reason: str
) -> None:
    record = output_record(
        item(status=JobStatus.SUCCEEDED, response=reply(finish_reason=finish_reason))
    )

    assert record["response"]["body"]["choices"][0]["finish_reason"] == openai_reason


def test_a_failure_with_a_status_code_carries_the_vendor_answer_and_an_error() -> None:
    error = JobError(kind="auth", message="the key was refused", vendor="openai", status_code=401)

    record = output_record(item(status=JobStatus.FAILED, error=error))

    assert record == {
        "id": "batch_req_j1",
        "custom_id": "request-1",
        "response": {
            "status_code": 401,
            "request_id": "j1",
            "body": {"error": {"message": "the key was refused", "type": "auth", "code": "auth"}},
        },
        "error": {"code": "auth", "message": "the key was refused"},
    }


def test_a_failure_without_a_status_code_has_no_response() -> None:
    error = JobError(kind="timeout", message="no answer in 60 s", retryable=True)

    record = output_record(item(status=JobStatus.FAILED, error=error))

    assert record["response"] is None
    assert record["error"] == {"code": "timeout", "message": "no answer in 60 s"}


def test_a_cancelled_item_has_the_cancelled_code() -> None:
    without_error = output_record(item(status=JobStatus.CANCELLED))
    with_error = output_record(
        item(status=JobStatus.CANCELLED, error=JobError(kind="cancelled", message="by the user"))
    )

    assert without_error["response"] is None
    assert without_error["error"] == {"code": "cancelled", "message": "the job was cancelled"}
    assert with_error["error"] == {"code": "cancelled", "message": "by the user"}


def test_an_expired_item_has_the_expired_code() -> None:
    error = JobError(kind="expired", message="the job record of j1 expired")

    record = output_record(item(status=None, error=error))
    bare = output_record(item(status=None))

    assert record["response"] is None
    assert record["error"] == {"code": "expired", "message": "the job record of j1 expired"}
    assert bare["error"]["code"] == "expired"


def test_an_item_still_running_is_not_reported_as_a_success() -> None:
    record = output_record(item(status=JobStatus.RUNNING))

    assert record["response"] is None
    assert record["error"] == {"code": "not_finished", "message": "the job is still running"}


def test_write_results_writes_compact_lines_that_parse_back() -> None:
    items = [
        item(status=JobStatus.SUCCEEDED, response=reply()),
        item(
            index=1,
            custom_id="b",
            job_id="j2",
            status=JobStatus.FAILED,
            error=JobError(kind="rate_limited", message="slow down", status_code=429),
        ),
        item(index=2, custom_id="c", job_id="j3", status=None),
    ]
    out = io.StringIO()

    count = write_results(items, out)

    text = out.getvalue()
    assert count == 3
    assert text.endswith("\n")
    lines = text.splitlines()
    assert [json.loads(line) for line in lines] == [output_record(each) for each in items]
    assert "wörld" in lines[0]  # not escaped to \u00f6
    assert ", " not in lines[1]
    assert '"custom_id":"b"' in lines[1]


def test_write_results_of_nothing_writes_nothing() -> None:
    out = io.StringIO()

    assert write_results([], out) == 0
    assert out.getvalue() == ""


# --- bounded input ---------------------------------------------------------------------


class Endless(io.RawIOBase):
    """A file that never ends, as /dev/zero or a runaway pipe: counts what was read."""

    def __init__(self, chunk: bytes) -> None:
        self.chunk, self.read_bytes = chunk, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = len(buffer)
        data = (self.chunk * (size // len(self.chunk) + 1))[:size]
        buffer[:size] = data
        self.read_bytes += size
        return size


@pytest.mark.parametrize(
    ("line", "key"),
    [
        (b'{"model": "a", "model": "b", "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"custom_id": "x", "body": {"model": "a", "messages": [], "messages": []}}', "messages"),
        (
            b'{"model": "a", "messages": [{"role": "user", "content": "x", "content": "y"}]}',
            "content",
        ),
    ],
)
def test_a_line_that_repeats_a_key_is_refused_naming_the_key(line: bytes, key: str) -> None:
    with pytest.raises(BatchFileError) as caught:
        parse_batch_lines([line])
    assert caught.value.problems == [(1, f"not valid JSON: duplicate key {key!r} in an object")]


def test_more_requests_than_allowed_stop_the_read_at_the_first_one_over() -> None:
    lines = jsonl(*(BODY for _ in range(10)))

    with pytest.raises(BatchFileError) as caught:
        parse_batch_lines(iter(lines), limits=BatchLimits(max_items=3))

    assert caught.value.problems == [(4, "more than 3 requests (LLMDISPATCH_MAX_BATCH_ITEMS)")]


def test_a_list_of_more_requests_than_allowed_is_refused_too() -> None:
    with pytest.raises(BatchFileError, match="more than 2 requests"):
        requests_as_lines([BODY, BODY, BODY], limits=BatchLimits(max_items=2))


@pytest.mark.timeout(30)
def test_an_endless_line_is_refused_once_it_passes_the_longest_a_request_may_be() -> None:
    endless = Endless(b"\0")
    limits = BatchLimits(max_request_bytes=1000)

    with pytest.raises(BatchFileError) as caught:
        list(bounded_lines(io.BufferedReader(endless), limits))

    assert caught.value.problems == [(1, "longer than 67,536 bytes: not one request")]
    assert endless.read_bytes < 1_000_000


@pytest.mark.timeout(30)
def test_an_endless_file_of_lines_is_refused_past_the_file_bound() -> None:
    endless = Endless(json.dumps(BODY).encode() + b"\n")
    limits = BatchLimits(max_file_bytes=100_000, max_request_bytes=10_000)

    with pytest.raises(BatchFileError) as caught:
        list(bounded_lines(io.BufferedReader(endless), limits))

    [(_, reason)] = caught.value.problems
    assert reason == "the file is larger than 100,000 bytes (LLMDISPATCH_MAX_BATCH_BYTES)"
    assert endless.read_bytes < 1_000_000


@pytest.mark.timeout(60)
def test_dev_zero_as_a_batch_file_is_refused_without_filling_memory() -> None:
    with pytest.raises(BatchFileError, match="longer than"):
        read_batch_file("/dev/zero", limits=BatchLimits(max_request_bytes=4 * 1024 * 1024))


def test_a_long_line_is_skipped_to_its_end_and_the_lines_after_it_are_still_checked(
    tmp_path: Path,
) -> None:
    limits = BatchLimits(max_request_bytes=1000, max_file_bytes=1_000_000)
    long_line = json.dumps({"messages": [{"role": "user", "content": "x" * 200_000}]})
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join([json.dumps(BODY), long_line, "not json", json.dumps(BODY)]) + "\n")

    with pytest.raises(BatchFileError) as caught:
        read_batch_file(path, limits=limits)

    assert [number for number, _ in caught.value.problems] == [2, 3]
    assert caught.value.problems[0][1] == "longer than 67,536 bytes: not one request"


@pytest.mark.timeout(30)
def test_an_endless_line_within_a_file_bound_is_refused_at_the_file_bound() -> None:
    endless = Endless(b"\0")
    limits = BatchLimits(max_request_bytes=1000, max_file_bytes=500_000)

    with pytest.raises(BatchFileError, match="larger than 500,000 bytes"):
        list(bounded_lines(io.BufferedReader(endless), limits))
    assert endless.read_bytes < 1_000_000
