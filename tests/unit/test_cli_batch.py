"""`llmdispatch batch`: submit a JSONL file, follow it, fetch its results, cancel, retry."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import producer.cli.root
from dispatcher import BatchNotFound
from dispatcher.models import (
    BatchCounts,
    BatchItem,
    BatchRecord,
    JobError,
    JobStatus,
    Response,
    Usage,
)
from producer.batch_files import BatchLine, read_batch_file
from producer.cli.root import (
    EXIT_BATCH_ITEMS_FAILED,
    EXIT_NOT_FOUND,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    app,
)

BATCH_ID = "b" * 32
OTHER_ID = "0" * 32
CREATED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi."}]}
runner = CliRunner()


def record(
    *, queued: int = 0, running: int = 0, succeeded: int = 0, failed: int = 0, cancelled: int = 0
) -> BatchRecord:
    """The batch as it stands with these counts; ended 12.3 s after creation once none pend."""
    counts = BatchCounts(
        total=queued + running + succeeded + failed + cancelled,
        queued=queued,
        running=running,
        succeeded=succeeded,
        failed=failed,
        cancelled=cancelled,
    )
    ended = counts.pending == 0
    return BatchRecord(
        batch_id=BATCH_ID,
        counts=counts,
        created_at=CREATED,
        started_at=CREATED + timedelta(seconds=0.3),
        finished_at=CREATED + timedelta(seconds=12.3) if ended else None,
        prompt_tokens=40,
        completion_tokens=12,
        cost_usd=0.00125,
        eta_s=0.0 if ended else 75.0,
        metadata={"team": "search"},
    )


def reply(content: str) -> Response:
    return Response(
        content=content,
        model="gpt-4o-mini",
        vendor="openai",
        usage=Usage(prompt_tokens=10, completion_tokens=3),
        created_at=CREATED,
    )


class FakeClient:
    """The batch methods of `Client`, over canned records and items; no Redis."""

    def __init__(self) -> None:
        # What `wait_batch` reports in turn; `batch_status` gives the last.
        self.progress: list[BatchRecord] = [record(succeeded=2)]
        self.items: list[BatchItem] = []
        self.submitted: list[tuple[list[BatchLine], Mapping[str, str] | None]] = []
        self.waits: list[float | None] = []
        self.cancelled = 0
        self.resubmitted = 0

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def submit_batch(self, source: Any, *, metadata: Mapping[str, str] | None = None) -> str:
        # Reads the file as `Client.submit_batch` does, so a bad file raises the real error.
        self.submitted.append((read_batch_file(source), metadata))
        return BATCH_ID

    def batch_status(self, batch_id: str) -> BatchRecord:
        self._require(batch_id)
        return self.progress[-1]

    def wait_batch(
        self,
        batch_id: str,
        timeout_s: float | None = None,
        *,
        on_progress: Callable[[BatchRecord], Any] | None = None,
        interval_s: float = 1.0,
    ) -> BatchRecord:
        self._require(batch_id)
        self.waits.append(timeout_s)
        for seen in self.progress:
            if on_progress is not None:
                on_progress(seen)
        last = self.progress[-1]
        if not last.done:
            raise TimeoutError(f"batch {batch_id} has {last.counts.pending} items pending")
        return last

    def iter_batch_results(self, batch_id: str) -> Iterator[BatchItem]:
        self._require(batch_id)
        return iter(self.items)

    def batch_results(self, batch_id: str) -> list[BatchItem]:
        raise AssertionError("the CLI streams results with iter_batch_results")

    def cancel_batch(self, batch_id: str) -> int:
        self._require(batch_id)
        return self.cancelled

    def retry_failed(self, batch_id: str) -> int:
        self._require(batch_id)
        return self.resubmitted

    @staticmethod
    def _require(batch_id: str) -> None:
        if batch_id != BATCH_ID:
            raise BatchNotFound(f"no batch {batch_id!r}: it never existed or has expired")


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    fake = FakeClient()
    monkeypatch.setattr(producer.cli.root, "make_client", lambda: fake)
    return fake


def batch_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def openai_line(custom_id: str) -> str:
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": BODY}
    )


SUMMARY = f"batch {BATCH_ID}: 3 succeeded, 1 failed, 0 cancelled of 4 in 12.3 s"


# --- submit ------------------------------------------------------------------------------


def test_submit_prints_the_id_follows_progress_to_a_summary_and_exits_7_on_failures(
    client: FakeClient, tmp_path: Path
) -> None:
    client.progress = [
        record(queued=4),
        record(running=2, succeeded=1, failed=1),
        record(succeeded=3, failed=1),
    ]
    path = batch_file(tmp_path, openai_line("a"), json.dumps({**BODY, "custom_id": "b"}))
    result = runner.invoke(app, ["batch", "submit", str(path), "--timeout", "30"])
    assert result.exit_code == EXIT_BATCH_ITEMS_FAILED, result.output
    assert result.stdout == f"{BATCH_ID}\n"
    assert SUMMARY in result.stderr.splitlines()
    # Where stderr is not a terminal, the bar is drawn once, as it stands at the end.
    assert "4/4" in result.stderr
    assert "1 failed" in result.stderr
    assert client.waits == [30.0]
    [(lines, _)] = client.submitted
    assert [line.custom_id for line in lines] == ["a", "b"]


def test_submit_exits_0_when_every_item_succeeded(client: FakeClient, tmp_path: Path) -> None:
    client.progress = [record(running=2), record(succeeded=2)]
    result = runner.invoke(app, ["batch", "submit", str(batch_file(tmp_path, openai_line("a")))])
    assert result.exit_code == 0, result.output
    assert f"batch {BATCH_ID}: 2 succeeded, 0 failed, 0 cancelled of 2 in 12.3 s" in result.stderr


def test_submit_no_wait_prints_only_the_id_and_passes_the_metadata(
    client: FakeClient, tmp_path: Path
) -> None:
    path = batch_file(tmp_path, openai_line("a"))
    result = runner.invoke(
        app, ["batch", "submit", str(path), "--no-wait", "--meta", "team=search", "--meta", "n=a=b"]
    )
    assert result.exit_code == 0, result.output
    assert (result.stdout, result.stderr) == (f"{BATCH_ID}\n", "")
    assert client.waits == []
    assert client.submitted[0][1] == {"team": "search", "n": "a=b"}


def test_submit_json_prints_the_final_status_alone_on_stdout(
    client: FakeClient, tmp_path: Path
) -> None:
    path = batch_file(tmp_path, openai_line("a"))
    waited = runner.invoke(app, ["batch", "submit", str(path), "--json"])
    assert waited.exit_code == 0, waited.output
    status = json.loads(waited.stdout)
    assert (status["batch_id"], status["done"], status["counts"]["succeeded"]) == (
        BATCH_ID,
        True,
        2,
    )
    queued = runner.invoke(app, ["batch", "submit", str(path), "--json", "--no-wait"])
    assert json.loads(queued.stdout) == {"batch_id": BATCH_ID}


def test_submit_dash_reads_the_batch_from_stdin(client: FakeClient) -> None:
    stdin = openai_line("first") + "\n" + json.dumps(BODY) + "\n"
    result = runner.invoke(app, ["batch", "submit", "-", "--no-wait"], input=stdin)
    assert result.exit_code == 0, result.output
    [(lines, _)] = client.submitted
    assert [(line.line, line.custom_id) for line in lines] == [(1, "first"), (2, "line-2")]


def test_submit_of_an_invalid_file_exits_2_listing_every_bad_line(
    client: FakeClient, tmp_path: Path
) -> None:
    path = batch_file(tmp_path, openai_line("a"), "{not json", openai_line("a"))
    result = runner.invoke(app, ["batch", "submit", str(path)])
    assert result.exit_code == EXIT_USAGE
    assert result.stdout == ""
    assert "invalid batch file (2 bad lines):" in result.stderr
    assert "line 2: not valid JSON" in result.stderr
    assert "line 3: duplicate custom_id 'a' (first on line 1)" in result.stderr
    assert client.submitted == []


def test_submit_refuses_a_missing_file_and_a_meta_without_a_value(
    client: FakeClient, tmp_path: Path
) -> None:
    missing = runner.invoke(app, ["batch", "submit", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == EXIT_USAGE
    assert "cannot read" in missing.stderr
    path = batch_file(tmp_path, openai_line("a"))
    bad_meta = runner.invoke(app, ["batch", "submit", str(path), "--meta", "team"])
    assert bad_meta.exit_code == EXIT_USAGE
    assert "is not KEY=VALUE" in bad_meta.stderr
    assert client.submitted == []


# --- status and wait ---------------------------------------------------------------------


def test_status_json_holds_the_record_with_its_derived_counts(client: FakeClient) -> None:
    client.progress = [record(running=1, succeeded=2, failed=1)]
    result = runner.invoke(app, ["batch", "status", BATCH_ID, "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["batch_id"] == BATCH_ID
    assert status["counts"] == {
        "total": 4,
        "queued": 0,
        "running": 1,
        "succeeded": 2,
        "failed": 1,
        "cancelled": 0,
        "ended": 3,
        "pending": 1,
    }
    assert (status["done"], status["eta_s"], status["metadata"]) == (
        False,
        75.0,
        {"team": "search"},
    )
    # Without the derived fields, it is the record itself.
    del status["done"], status["counts"]["ended"], status["counts"]["pending"]
    assert BatchRecord.model_validate(status) == client.progress[-1]


def test_status_text_lists_the_items_by_state(client: FakeClient) -> None:
    client.progress = [record(running=1, succeeded=2, failed=1)]
    result = runner.invoke(app, ["batch", "status", BATCH_ID])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert f"batch:     {BATCH_ID}" in lines
    assert "status:    running, 3 of 4 items ended" in lines
    assert "eta:       0:01:15" in lines
    assert "metadata:  team=search" in lines
    assert lines[-6:] == [
        "state      items",
        "queued     0",
        "running    1",
        "succeeded  2",
        "failed     1",
        "cancelled  0",
    ]


def test_every_batch_command_exits_4_for_no_such_batch(client: FakeClient) -> None:
    for command in (["status"], ["wait"], ["results"], ["cancel"], ["retry-failed"]):
        result = runner.invoke(app, ["batch", *command, OTHER_ID])
        assert result.exit_code == EXIT_NOT_FOUND, command
        assert f"no batch '{OTHER_ID}'" in result.stderr


def test_wait_exits_5_when_the_batch_is_still_running_at_the_timeout(
    client: FakeClient,
) -> None:
    client.progress = [record(queued=2), record(running=1, succeeded=1)]
    result = runner.invoke(app, ["batch", "wait", BATCH_ID, "--timeout", "0.5"])
    assert result.exit_code == EXIT_TIMEOUT
    assert f"batch {BATCH_ID} has 1 items pending" in result.stderr
    assert client.waits == [0.5]


def test_wait_json_prints_the_final_status_and_exits_by_its_outcome(client: FakeClient) -> None:
    client.progress = [record(running=4), record(succeeded=3, failed=1)]
    result = runner.invoke(app, ["batch", "wait", BATCH_ID, "--json"])
    assert result.exit_code == EXIT_BATCH_ITEMS_FAILED
    assert json.loads(result.stdout)["counts"]["failed"] == 1
    assert SUMMARY in result.stderr


# --- results -----------------------------------------------------------------------------


def finished_items() -> list[BatchItem]:
    refused = JobError(kind="vendor_auth", message="the key was refused", status_code=401)
    return [
        BatchItem(
            index=0,
            custom_id="a",
            job_id="1" * 32,
            status=JobStatus.SUCCEEDED,
            attempts=1,
            response=reply("Hello"),
        ),
        BatchItem(
            index=1,
            custom_id="b",
            job_id="2" * 32,
            status=JobStatus.FAILED,
            attempts=2,
            error=refused,
        ),
        BatchItem(index=2, custom_id="c", job_id="3" * 32, status=JobStatus.CANCELLED),
    ]


def test_results_output_writes_one_openai_line_per_item_in_order(
    client: FakeClient, tmp_path: Path
) -> None:
    client.progress = [record(succeeded=1, failed=1, cancelled=1)]
    client.items = finished_items()
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["batch", "results", BATCH_ID, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == f"wrote 3 results to {out}\n"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == ["a", "b", "c"]
    assert lines[0]["id"] == f"batch_req_{'1' * 32}"
    assert lines[0]["error"] is None
    body = lines[0]["response"]["body"]
    assert (body["object"], body["choices"][0]["message"]["content"]) == (
        "chat.completion",
        "Hello",
    )
    assert lines[0]["response"]["status_code"] == 200
    assert lines[1]["response"]["status_code"] == 401
    assert lines[1]["error"] == {"code": "vendor_auth", "message": "the key was refused"}
    assert (lines[2]["response"], lines[2]["error"]["code"]) == (None, "cancelled")


def test_results_go_to_stdout_without_output_or_with_a_dash(client: FakeClient) -> None:
    client.progress = [record(succeeded=1, failed=1, cancelled=1)]
    client.items = finished_items()
    for extra in ([], ["-o", "-"]):
        result = runner.invoke(app, ["batch", "results", BATCH_ID, *extra])
        assert result.exit_code == 0, result.output
        custom_ids = [json.loads(line)["custom_id"] for line in result.stdout.splitlines()]
        assert custom_ids == ["a", "b", "c"]
        assert result.stderr == ""


def test_results_refuse_an_unfinished_batch_unless_partial(
    client: FakeClient, tmp_path: Path
) -> None:
    client.progress = [record(running=1, succeeded=1)]
    client.items = [
        finished_items()[0],
        BatchItem(index=1, custom_id="b", job_id="2" * 32, status=JobStatus.RUNNING, attempts=1),
    ]
    out = tmp_path / "out.jsonl"
    refused = runner.invoke(app, ["batch", "results", BATCH_ID, "-o", str(out)])
    assert refused.exit_code == EXIT_USAGE
    assert "1 of 2 items not finished" in refused.stderr
    assert "--partial" in refused.stderr
    assert not out.exists()
    partial = runner.invoke(app, ["batch", "results", BATCH_ID, "-o", str(out), "--partial"])
    assert partial.exit_code == 0, partial.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["error"] and line["error"]["code"] for line in lines] == [None, "not_finished"]


# --- cancel and retry-failed ---------------------------------------------------------------


def test_cancel_prints_how_many_items_were_cancelled(client: FakeClient) -> None:
    client.cancelled = 3
    text = runner.invoke(app, ["batch", "cancel", BATCH_ID])
    assert (text.exit_code, text.stdout) == (0, f"cancelled 3 items of batch {BATCH_ID}\n")
    as_json = runner.invoke(app, ["batch", "cancel", BATCH_ID, "--json"])
    assert json.loads(as_json.stdout) == {"batch_id": BATCH_ID, "cancelled": 3, "had_ended": False}


def test_cancelling_an_ended_batch_says_it_had_ended_and_how(client: FakeClient) -> None:
    client.cancelled = 0
    client.progress = [record(succeeded=3, failed=1)]
    finished = (CREATED + timedelta(seconds=12.3)).isoformat()

    text = runner.invoke(app, ["batch", "cancel", BATCH_ID])
    assert (text.exit_code, text.stdout) == (
        0,
        f"batch {BATCH_ID} had already ended; nothing was cancelled: "
        f"3 succeeded, 1 failed, 0 cancelled of 4 at {finished}\n",
    )
    as_json = runner.invoke(app, ["batch", "cancel", BATCH_ID, "--json"])
    assert json.loads(as_json.stdout) == {
        "batch_id": BATCH_ID,
        "cancelled": 0,
        "had_ended": True,
        "counts": {
            "total": 4,
            "queued": 0,
            "running": 0,
            "succeeded": 3,
            "failed": 1,
            "cancelled": 0,
        },
        "finished_at": finished,
    }


def test_cancelling_a_batch_with_nothing_left_to_cancel_but_items_pending_prints_the_count(
    client: FakeClient,
) -> None:
    client.cancelled = 0
    client.progress = [record(running=1, succeeded=3)]
    text = runner.invoke(app, ["batch", "cancel", BATCH_ID])
    assert (text.exit_code, text.stdout) == (0, f"cancelled 0 items of batch {BATCH_ID}\n")


def test_retry_failed_prints_how_many_were_resubmitted_and_follows_the_batch(
    client: FakeClient,
) -> None:
    client.resubmitted = 1
    client.progress = [record(running=1, succeeded=3), record(succeeded=4)]
    followed = runner.invoke(app, ["batch", "retry-failed", BATCH_ID])
    assert followed.exit_code == 0, followed.output
    assert followed.stdout == f"resubmitted 1 failed item of batch {BATCH_ID}\n"
    assert f"batch {BATCH_ID}: 4 succeeded, 0 failed, 0 cancelled of 4 in 12.3 s" in (
        followed.stderr
    )
    assert client.waits == [None]
    queued = runner.invoke(app, ["batch", "retry-failed", BATCH_ID, "--no-wait"])
    assert (queued.exit_code, queued.stderr) == (0, "")
    assert client.waits == [None]
