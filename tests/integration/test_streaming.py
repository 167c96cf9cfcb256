"""Streaming end to end: a real worker streams from stand-in vendors; subscribers follow it.

Every subscriber reads through the producer API (`Client.stream`,
`Client.send_streaming`, `AsyncClient.stream`) from its own thread or task, and
every wait is a condition with a timeout. The stand-in's `stall:<ms>` fault
slows the vendor between stream events, so a subscriber can arrive before the
first chunk, in the middle, or after the end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import (
    JobEventKind,
    JobRecord,
    JobStatus,
    Message,
    Request,
    Role,
    VendorUnavailable,
)
from dispatcher.models import StreamEvent, StreamEventType
from producer import AsyncClient, Client, text_of
from tests.integration.stack import Stack, running_stack, wait_for

pytestmark = pytest.mark.integration

KEY = "sk-stream-test-0123456789abcdef"
PHRASE = "the quick brown fox jumps over the lazy dog"
REPLY = f"echo: {PHRASE}"  # the stand-in echoes the last user message, one word per event
# (vendor config relative to the stand-in's URL, a model that vendor serves)
FORMATS: dict[str, tuple[dict[str, str], str]] = {
    "openai": ({"type": "openai", "base_url": "{url}/v1"}, "gpt-4o-mini"),
    "anthropic": ({"type": "anthropic", "base_url": "{url}"}, "claude-3-5-haiku-latest"),
    "ollama": ({"type": "ollama", "base_url": "{url}"}, "llama3.2"),
}
# How long one subscriber may take to see a whole stream (a few seconds here).
STREAM_TIMEOUT_S = 30.0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        yield running


def configure(
    stack: Stack, *, kind: str = "openai", fault: str, stall_timeout_s: float | None = None
) -> str:
    """One stand-in vendor of wire format `kind`, answering with `fault`; the model to ask for."""
    fields, model = FORMATS[kind]
    vendor: dict[str, Any] = {
        **fields,
        "models": [model],
        "timeout_s": 4,
        "api_key": "${OPENAI_API_KEY}",
        "headers": {"x-fake-fault": fault},
    }
    if stall_timeout_s is not None:
        vendor["stall_timeout_s"] = stall_timeout_s
    stack.configure(
        {
            "vendors": {kind: vendor},
            "default_vendor": kind,
            "retry_policy": {"max_retries": 2, "backoff": "fixed", "initial_delay_s": 0.2},
        },
        OPENAI_API_KEY=KEY,
        # Longer than any stream here: no message is redelivered while its stream runs.
        LLMDISPATCH_VISIBILITY_TIMEOUT_S="30",
    )
    return model


def connect(stack: Stack) -> Client:
    with stack.environment():
        return Client.from_env()


def request(model: str, text: str = PHRASE) -> Request:
    return Request(model=model, messages=[Message(role=Role.USER, content=text)], stream=True)


class Follower:
    """Consumes one stream in a daemon thread, keeping each event and when it arrived."""

    def __init__(self, open_stream: Callable[[], Iterable[StreamEvent]]) -> None:
        self.open_stream = open_stream
        self.events: list[StreamEvent] = []
        self.arrived_at: list[float] = []  # time.monotonic() per event
        self.started_at = 0.0  # time.time() just before the stream was opened
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._follow, daemon=True)

    def start(self) -> Follower:
        self.thread.start()
        return self

    def _follow(self) -> None:
        self.started_at = time.time()
        try:
            for event in self.open_stream():
                self.events.append(event)
                self.arrived_at.append(time.monotonic())
        except BaseException as exc:  # re-raised in the test's thread by result()
            self.error = exc

    def has_chunk(self) -> bool:
        return any(e.type is StreamEventType.CHUNK for e in list(self.events))

    def result(self, timeout_s: float = STREAM_TIMEOUT_S) -> list[StreamEvent]:
        """Every event, once the stream has ended; its error if it raised one."""
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise AssertionError(
                f"the stream did not end within {timeout_s:g} s; got {self.events!r}"
            )
        if self.error is not None:
            raise self.error
        return self.events


def assert_one_exact_stream(events: list[StreamEvent], job_id: str, reply: str) -> None:
    """The events make the reply, numbered 1, 2, 3... with no gap or repeat, ending in a done
    that names the vendor and model."""
    assert events, "no events"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(e.job_id == job_id for e in events)
    kinds = [e.type for e in events]
    assert kinds.count(StreamEventType.DONE) == 1
    assert kinds[-1] is StreamEventType.DONE
    assert StreamEventType.ERROR not in kinds
    assert text_of(events) == reply
    assert events[-1].vendor, "done names the vendor"
    assert events[-1].model, "done names the model"


def kinds_of(record: JobRecord) -> list[JobEventKind]:
    return [e.kind for e in record.events]


@pytest.mark.parametrize("kind", FORMATS)
def test_subscribers_before_during_and_after_the_stream_each_get_the_exact_reply_once(
    stack: Stack, kind: str
) -> None:
    # 0.5 s before the first byte, 0.2 s between events: there is a "before" and a "middle".
    model = configure(stack, kind=kind, fault="slow:500,stall:200", stall_timeout_s=3)
    stack.start_worker([f"llm.{kind}"])
    with connect(stack) as client:
        job_id = client.submit(request(model))
        early = Follower(lambda: client.stream(job_id)).start()
        wait_for(early.has_chunk, STREAM_TIMEOUT_S, "the early subscriber's first chunk")
        assert StreamEventType.DONE not in [e.type for e in list(early.events)]
        middle = Follower(lambda: client.stream(job_id)).start()
        early_events = early.result()
        middle_events = middle.result()
        assert client.get(job_id).status is JobStatus.SUCCEEDED
        late_events = Follower(lambda: client.stream(job_id)).start().result()
        record = client.get(job_id)

    for events in (early_events, middle_events, late_events):
        assert_one_exact_stream(events, job_id, REPLY)
        assert StreamEventType.RESET not in [e.type for e in events]
    # Live or replayed, every subscriber saw the very same events.
    assert middle_events == early_events
    assert late_events == early_events
    first_chunk = next(e for e in early_events if e.type is StreamEventType.CHUNK)
    assert first_chunk.emitted_at is not None
    assert first_chunk.emitted_at > early.started_at  # the early one really came first
    assert middle.arrived_at[0] < early.arrived_at[-1]  # the middle one joined before the end
    assert record.response is not None
    assert record.response.content == REPLY
    done = early_events[-1]
    assert (done.vendor, done.model) == (kind, record.response.model)
    assert record.response.vendor == kind
    assert kinds_of(record).count(JobEventKind.SUCCEEDED) == 1
    assert len(stack.received()) == 1


def peak_concurrency(records: list[JobRecord]) -> int:
    """The most jobs that were running at one instant, from their start and end times."""
    moments: list[tuple[float, int]] = []
    for record in records:
        assert record.started_at is not None
        assert record.finished_at is not None
        moments += [(record.started_at.timestamp(), 1), (record.finished_at.timestamp(), -1)]
    running = peak = 0
    for _, step in sorted(moments):  # at a tie, an end counts before a start
        running += step
        peak = max(peak, running)
    return peak


def test_a_hundred_concurrent_streams_through_one_worker_all_complete_exactly(
    stack: Stack,
) -> None:
    jobs = 100
    # 0.2 s between events: each stream lasts about two seconds, so they all overlap.
    model = configure(stack, fault="stall:200", stall_timeout_s=3)
    stack.start_worker(["llm.openai"], concurrency=jobs)
    prompts = [f"prompt {i} says hello" for i in range(jobs)]

    async def follow(client: AsyncClient, job_id: str) -> list[StreamEvent]:
        return [event async for event in client.stream(job_id)]

    async def run() -> tuple[list[str], list[list[StreamEvent]], list[JobRecord]]:
        with stack.environment():
            client = AsyncClient.from_env()
        async with client:
            job_ids = [await client.submit(request(model, prompt)) for prompt in prompts]
            streams = await asyncio.wait_for(
                asyncio.gather(*(follow(client, job_id) for job_id in job_ids)),
                timeout=45,
            )
            records = [await client.get(job_id) for job_id in job_ids]
        return job_ids, streams, records

    job_ids, streams, records = asyncio.run(run())

    for job_id, prompt, events in zip(job_ids, prompts, streams, strict=True):
        assert_one_exact_stream(events, job_id, f"echo: {prompt}")
    assert all(r.status is JobStatus.SUCCEEDED for r in records)
    sent = stack.received()
    assert sorted(r["body"]["messages"][-1]["content"] for r in sent) == sorted(prompts)
    # One after the other, the peak would be 1 (and the run over three minutes).
    assert peak_concurrency(records) >= jobs * 0.8


def test_a_stream_dropped_midway_is_reset_and_retried_and_ends_once(stack: Stack) -> None:
    # Only the first call drops, halfway; 0.1 s between events keeps the subscriber live.
    model = configure(stack, fault="midstream-drop@1,stall:100", stall_timeout_s=3)
    stack.start_worker(["llm.openai"])
    with connect(stack) as client:
        job_id = client.submit(request(model))
        live = Follower(lambda: client.stream(job_id)).start()
        events = live.result()
        record = client.get(job_id)
        replayed = Follower(lambda: client.stream(job_id)).start().result()

    assert_one_exact_stream(events, job_id, REPLY)
    kinds = [e.type for e in events]
    assert kinds.count(StreamEventType.RESET) == 1
    cut = kinds.index(StreamEventType.RESET)
    reset = events[cut]
    before, after = events[:cut], events[cut + 1 :]
    dropped = "".join(e.delta or "" for e in before)
    assert dropped, "the first attempt streamed nothing before it dropped"
    assert REPLY.startswith(dropped)
    assert len(dropped) < len(REPLY)
    assert {e.attempt for e in before} == {0}
    assert reset.attempt is not None
    assert reset.attempt > 0
    chunks = [e for e in after if e.type is StreamEventType.CHUNK]
    assert {e.attempt for e in chunks} == {reset.attempt}
    assert "".join(e.delta or "" for e in chunks) == REPLY
    assert before[0].emitted_at is not None
    assert before[0].emitted_at > live.started_at  # it was there before the first chunk
    assert replayed == events  # a late subscriber replays the reset too

    assert record.status is JobStatus.SUCCEEDED
    assert record.response is not None
    assert record.response.content == REPLY
    assert kinds_of(record).count(JobEventKind.SUCCEEDED) == 1
    assert kinds_of(record).count(JobEventKind.RETRY) == 1
    assert len(stack.received()) == 2


def test_a_stalled_stream_times_out_after_the_stall_timeout_and_is_retried(stack: Stack) -> None:
    # The first call goes silent for 8 s after its first event; 1 s of silence is a stall
    # (wide apart, so a busy machine delaying the retry's first byte cannot blur them).
    model = configure(stack, fault="stall:8000@1", stall_timeout_s=1.0)
    stack.start_worker(["llm.openai"])
    with connect(stack) as client:
        events = Follower(lambda: client.send_streaming(request(model))).start().result()
        assert events, "send_streaming yielded nothing"
        job_id = events[0].job_id
        record = client.get(job_id)

    assert_one_exact_stream(events, job_id, REPLY)
    assert record.status is JobStatus.SUCCEEDED
    assert kinds_of(record).count(JobEventKind.SUCCEEDED) == 1
    retries = [e for e in record.events if e.kind is JobEventKind.RETRY]
    assert len(retries) == 1
    assert "stall" in (retries[0].reason or "").lower()
    first, second = stack.received()
    # Retried once the 1 s stall timeout fired, not after the vendor's 8 s silence.
    assert 1.0 <= second["at"] - first["at"] < 7.0


def test_a_stream_whose_job_fails_raises_the_typed_error_after_its_partial_text(
    stack: Stack,
) -> None:
    # Every call fails mid-stream; once retries run out the job fails with that error.
    model = configure(stack, fault="midstream-error,stall:50", stall_timeout_s=3)
    stack.start_worker(["llm.openai"])
    with connect(stack) as client:
        job_id = client.submit(request(model))
        follower = Follower(lambda: client.stream(job_id)).start()
        with pytest.raises(VendorUnavailable) as caught:
            follower.result()
        record = client.get(job_id)
    assert caught.value.retryable
    assert record.status is JobStatus.FAILED
    assert kinds_of(record).count(JobEventKind.FAILED) == 1
    kinds = [e.type for e in follower.events]
    assert StreamEventType.DONE not in kinds  # a stream cut off upstream never ends as done
    assert kinds.count(StreamEventType.RESET) == 2  # two retries, each starting over
    assert len(stack.received()) == 3


def test_a_consumer_that_reconnects_resumes_after_the_last_seq_it_saw(stack: Stack) -> None:
    model = configure(stack, fault="stall:100", stall_timeout_s=3)
    stack.start_worker(["llm.openai"])
    with connect(stack) as client:
        job_id = client.submit(request(model))
        first_part: list[StreamEvent] = []
        stream = client.stream(job_id)
        for event in stream:
            first_part.append(event)
            if len(first_part) == 3:
                break
        stream.close()  # the consumer drops its connection mid-reply
        rest = Follower(lambda: client.stream(job_id, after=first_part[-1].seq)).start().result()
    events = first_part + rest
    assert_one_exact_stream(events, job_id, REPLY)
    assert rest[0].seq == first_part[-1].seq + 1
