"""`llmdispatch stream` and `llmdispatch send --stream` print a reply as it is generated."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest
import typer
from typer.testing import CliRunner

import producer.cli.root
from dispatcher import JobStatus, Response, Settings, VendorAuthError
from dispatcher.broker.messages import RunJob
from dispatcher.models import JobEvent, JobEventKind
from dispatcher.state.scripts import APPEND
from dispatcher.state.store import TERMINAL, JobStore, stream_event_body
from producer.cli.jobs import stream_command
from producer.cli.root import app
from producer.client import Client

PREFIX = "llmd"
REPLY = Response(content="Hello", model="gpt-4o-mini", vendor="openai")
REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hello."}],
    "stream": True,
}
runner = CliRunner()


def stream_app() -> typer.Typer:
    """The `stream` command under a root that builds clients as `llmdispatch` does.

    Until `producer.cli.root` registers the command, the tests mount it themselves; the
    client still comes from `producer.cli.root.make_client`, which the tests replace.
    """
    if any(command.name == "stream" for command in app.registered_commands):
        return app
    local = typer.Typer()

    @local.callback()
    def _root(ctx: typer.Context) -> None:
        ctx.obj = producer.cli.root.make_client

    local.command("stream")(stream_command)
    return local


class Worker:
    """Writes a job's progress through the store's real scripts, on its own connection."""

    def __init__(self, server: fakeredis.FakeServer) -> None:
        self.store = JobStore(fakeredis.FakeRedis(server=server), PREFIX)
        self._append = self.store.redis.register_script(APPEND)

    def chunk(
        self,
        job_id: str,
        delta: str,
        attempt: int = 0,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> None:
        if self.store.get(job_id).status is JobStatus.QUEUED:
            assert self.store.start(job_id, attempt, "openai") == "ok"
        fields: dict[str, Any] = {
            "type": "chunk",
            "job_id": job_id,
            "attempt": attempt,
            "delta": delta,
        }
        if tool_calls:
            fields["tool_calls"] = tool_calls
        body = stream_event_body(fields)
        keys = [self.store.keys.job(job_id), self.store.keys.stream(job_id)]
        channel = self.store.keys.channel(job_id)
        assert self._append(keys=keys, args=[attempt, channel, job_id, body, TERMINAL, 60]) > 0

    def retry(self, job_id: str, to_attempt: int) -> None:
        event = JobEvent(kind=JobEventKind.RETRY, at=datetime.now(UTC), attempt=to_attempt)
        self.store.reschedule(
            job_id, from_attempt=to_attempt - 1, to_attempt=to_attempt, event=event
        )
        assert self.store.start(job_id, to_attempt, "openai") == "ok"

    def succeed(self, job_id: str) -> None:
        self.store.finish(job_id, JobStatus.SUCCEEDED, vendor="openai", response=REPLY, stream=True)


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def worker(server: fakeredis.FakeServer) -> Worker:
    return Worker(server)


@pytest.fixture
def client(server: fakeredis.FakeServer, monkeypatch: pytest.MonkeyPatch) -> Client:
    settings = Settings.load(openai_api_key="sk-test-0123456789")
    fake_redis = fakeredis.FakeRedis(server=server)
    built = Client(settings, redis_client=fake_redis, send=lambda *_: None, rng=random.Random(0))
    monkeypatch.setattr(producer.cli.root, "make_client", lambda: built)
    return built


def test_stream_prints_the_text_notes_a_reset_on_stderr_and_ends_the_line(
    client: Client, worker: Worker
) -> None:
    job_id = client.submit(REQUEST)
    worker.chunk(job_id, "Hel")
    worker.retry(job_id, 1)
    worker.chunk(job_id, "Hel", attempt=1)
    worker.chunk(job_id, "lo", attempt=1)
    worker.succeed(job_id)
    result = runner.invoke(stream_app(), ["stream", job_id])
    assert result.exit_code == 0, result.output
    assert result.stdout == "Hel\nHello\n"
    assert result.stderr == "[attempt 1 restarts the reply]\n"


def test_stream_prints_the_tool_calls_once_the_reply_has_ended(
    client: Client, worker: Worker
) -> None:
    job_id = client.submit(REQUEST)
    worker.chunk(job_id, "", tool_calls=[{"index": 0, "id": "call_1", "name": "get_weather"}])
    worker.chunk(job_id, "", tool_calls=[{"index": 0, "arguments": '{"city":'}])
    worker.chunk(job_id, "", tool_calls=[{"index": 0, "arguments": '"Paris"}'}])
    worker.succeed(job_id)
    result = runner.invoke(stream_app(), ["stream", job_id])
    assert result.exit_code == 0, result.output
    assert result.stdout == '[tool call call_1: get_weather {"city":"Paris"}]\n'


def test_stream_json_prints_each_event_after_the_seq_given_as_one_line(
    client: Client, worker: Worker
) -> None:
    job_id = client.submit(REQUEST)
    worker.chunk(job_id, "Hel")
    worker.chunk(job_id, "lo")
    worker.succeed(job_id)
    result = runner.invoke(stream_app(), ["stream", job_id, "--json", "--after", "1"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["seq"], e["type"], e.get("delta")) for e in events] == [
        (2, "chunk", "lo"),
        (3, "done", None),
    ]
    assert events[1]["finish_reason"] == "stop"


def test_stream_of_a_failed_job_prints_its_text_then_exits_1(
    client: Client, worker: Worker
) -> None:
    job_id = client.submit(REQUEST)
    worker.chunk(job_id, "Hel")
    error = VendorAuthError("the key was refused", vendor="openai", status_code=401)
    worker.store.finish(job_id, JobStatus.FAILED, vendor="openai", error=error, stream=True)
    result = runner.invoke(stream_app(), ["stream", job_id])
    assert result.exit_code == producer.cli.root.EXIT_JOB_FAILED
    assert result.stdout == "Hel\n"
    assert "the key was refused" in result.stderr


def test_stream_exits_5_for_a_job_that_never_starts_and_4_for_no_such_job(
    client: Client,
) -> None:
    job_id = client.submit(REQUEST)
    late = runner.invoke(stream_app(), ["stream", job_id, "--start-timeout", "0.05"])
    assert late.exit_code == producer.cli.root.EXIT_TIMEOUT
    assert f"job {job_id} never started" in late.stderr
    missing = runner.invoke(stream_app(), ["stream", "0" * 32])
    assert missing.exit_code == producer.cli.root.EXIT_NOT_FOUND
    assert "no job" in missing.stderr


def test_send_stream_submits_a_streaming_job_and_prints_its_reply(
    client: Client, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    def send_and_work(message: RunJob, queue: str, priority: int) -> None:
        worker.chunk(message.job_id, "Hel")
        worker.chunk(message.job_id, "lo")
        worker.succeed(message.job_id)

    monkeypatch.setattr(client, "_send", send_and_work)
    result = runner.invoke(app, ["send", "Say hello.", "--model", "gpt-4o-mini", "--stream"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "Hello\n"
    as_json = runner.invoke(app, ["send", "hi", "--model", "gpt-4o-mini", "--stream", "--json"])
    assert as_json.exit_code == 0, as_json.output
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [line["type"] for line in lines] == ["chunk", "chunk", "done"]
    assert (lines[-1]["vendor"], lines[-1]["model"]) == ("openai", "gpt-4o-mini")
    assert client.get(lines[0]["job_id"]).request.stream is True


def test_send_without_stream_still_waits_and_prints_the_reply(
    client: Client, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    def send_and_finish(message: RunJob, queue: str, priority: int) -> None:
        worker.store.finish(message.job_id, JobStatus.SUCCEEDED, vendor="openai", response=REPLY)

    monkeypatch.setattr(client, "_send", send_and_finish)
    result = runner.invoke(app, ["send", "Say hello.", "--model", "gpt-4o-mini", "--timeout", "5"])
    assert (result.exit_code, result.stdout) == (0, "Hello\n")
