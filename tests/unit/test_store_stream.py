"""Stream events in the job store: numbering, replay, resets and the one terminal event."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import fakeredis
import pytest
import redis
import redis.asyncio

from dispatcher import FinishReason, JobStatus, Request, Response, Route, Usage, VendorUnavailable
from dispatcher.errors import JobCancelled, error_from_dict
from dispatcher.models import JobEvent, JobEventKind, StreamEventType
from dispatcher.store import JobStore
from dispatcher.store_async import AsyncStreamWriter
from producer.embedded_redis import EmbeddedRedis
from workers.loop import EventLoopThread

PREFIX = "llmd-stream-test"
ROUTE = Route(vendor="openai", model="gpt-4o-mini", queue="llm.openai")


@dataclass
class Backend:
    """A job store, and a stream writer on the same Redis driven by its own event loop."""

    store: JobStore
    writer: AsyncStreamWriter
    loop: EventLoopThread

    def append(self, job_id: str, attempt: int, delta: str) -> int:
        return self.loop.run(self.writer.append_chunk(job_id, attempt, delta, 1.5), 10)


@pytest.fixture(
    params=[
        pytest.param("fake", id="fakeredis"),
        pytest.param("real", id="real-redis", marks=pytest.mark.integration),
    ]
)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    sync_client: redis.Redis
    async_client: redis.asyncio.Redis
    if request.param == "fake":
        server = fakeredis.FakeServer()
        sync_client = fakeredis.FakeRedis(server=server)
        async_client = fakeredis.FakeAsyncRedis(server=server)
    else:
        embedded: EmbeddedRedis = request.getfixturevalue("redis_server")
        sync_client = embedded.client()
        async_client = redis.asyncio.Redis.from_url(embedded.url)
    sync_client.flushdb()
    loop = EventLoopThread("stream-test-loop")
    yield Backend(JobStore(sync_client, PREFIX), AsyncStreamWriter(async_client, PREFIX), loop)
    loop.run(async_client.aclose(), 10)
    loop.stop()
    sync_client.flushdb()
    sync_client.close()


RETRY = JobEvent(kind=JobEventKind.RETRY, attempt=1, vendor="openai", reason="stream broke")


def streaming_job(backend: Backend, make_request: Callable[..., Request]) -> str:
    job_id = backend.store.new_job_id()
    backend.store.create(job_id, make_request(stream=True), ROUTE)
    assert backend.store.start(job_id, 0, "openai") == "ok"
    return job_id


def done(backend: Backend, job_id: str, content: str = "Hello world") -> bool:
    response = Response(
        content=content,
        usage=Usage(prompt_tokens=3, completion_tokens=2),
        model="gpt-4o-mini",
        vendor="openai",
        finish_reason=FinishReason.LENGTH,
        cost_usd=0.25,
    )
    return backend.store.finish(
        job_id, JobStatus.SUCCEEDED, vendor="openai", response=response, stream=True
    )


def test_chunks_are_numbered_buffered_and_end_with_one_done_event(
    backend: Backend, make_request: Callable[..., Request]
) -> None:
    job_id = streaming_job(backend, make_request)
    assert [backend.append(job_id, 0, d) for d in ("Hello", " world")] == [1, 2]
    assert done(backend, job_id)
    events = backend.store.stream_events(job_id)
    assert [(e.seq, e.type) for e in events] == [
        (1, StreamEventType.CHUNK),
        (2, StreamEventType.CHUNK),
        (3, StreamEventType.DONE),
    ]
    assert [e.delta for e in events[:2]] == ["Hello", " world"]
    assert events[0].emitted_at == 1.5
    assert events[0].attempt == 0
    final = events[-1]
    assert final.finish_reason is FinishReason.LENGTH
    assert final.usage == Usage(prompt_tokens=3, completion_tokens=2)
    assert final.cost_usd == 0.25
    assert [e.seq for e in backend.store.stream_events(job_id, after_seq=2)] == [3]


def test_a_second_finish_emits_no_second_terminal_event(
    backend: Backend, make_request: Callable[..., Request]
) -> None:
    job_id = streaming_job(backend, make_request)
    backend.append(job_id, 0, "Hi")
    assert done(backend, job_id)
    assert not done(backend, job_id)
    assert not backend.store.cancel(job_id)
    terminal = [e for e in backend.store.stream_events(job_id) if e.type.is_terminal]
    assert len(terminal) == 1


def test_a_new_attempt_after_streamed_text_starts_with_a_reset(
    backend: Backend, make_request: Callable[..., Request]
) -> None:
    job_id = streaming_job(backend, make_request)
    backend.append(job_id, 0, "Hel")
    backend.store.reschedule(job_id, from_attempt=0, to_attempt=1, event=RETRY, counters=[])
    assert backend.store.start(job_id, 1, "openai") == "ok"
    backend.append(job_id, 1, "Hello")
    backend.append(job_id, 1, " world")
    assert done(backend, job_id)
    events = backend.store.stream_events(job_id)
    assert [(e.type.value, e.attempt) for e in events] == [
        ("chunk", 0),
        ("reset", 1),
        ("chunk", 1),
        ("chunk", 1),
        ("done", None),
    ]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]


def test_a_successful_attempt_without_text_still_resets_an_earlier_partial_one(
    backend: Backend, make_request: Callable[..., Request]
) -> None:
    job_id = streaming_job(backend, make_request)
    backend.append(job_id, 0, "Hel")
    backend.store.reschedule(job_id, from_attempt=0, to_attempt=1, event=RETRY, counters=[])
    assert backend.store.start(job_id, 1, "openai") == "ok"
    assert done(backend, job_id, content="")
    assert [e.type.value for e in backend.store.stream_events(job_id)] == ["chunk", "reset", "done"]


def test_a_stale_attempt_or_an_ended_job_cannot_append(
    backend: Backend, make_request: Callable[..., Request]
) -> None:
    job_id = streaming_job(backend, make_request)
    backend.store.reschedule(job_id, from_attempt=0, to_attempt=1, event=RETRY, counters=[])
    assert backend.store.start(job_id, 1, "openai") == "ok"
    assert backend.append(job_id, 0, "from a stale worker") == 0
    assert backend.append(job_id, 1, "ok") == 1
    assert done(backend, job_id)
    assert backend.append(job_id, 1, "after the end") == 0
    assert [e.delta for e in backend.store.stream_events(job_id) if e.delta] == ["ok"]


def test_a_failed_stream_ends_with_the_typed_error(
    backend: Backend, make_request: Callable[..., Request]
) -> None:
    job_id = streaming_job(backend, make_request)
    backend.append(job_id, 0, "Hel")
    error = VendorUnavailable("overloaded", vendor="openai", status_code=529)
    assert backend.store.finish(job_id, JobStatus.FAILED, vendor="openai", error=error, stream=True)
    final = backend.store.stream_events(job_id)[-1]
    assert final.type is StreamEventType.ERROR
    assert final.error is not None
    rebuilt = error_from_dict(final.error)
    assert isinstance(rebuilt, VendorUnavailable)
    assert rebuilt.status_code == 529


def test_cancelling_a_streaming_job_ends_its_stream_with_a_cancelled_error(
    backend: Backend, make_request: Callable[..., Request]
) -> None:
    job_id = streaming_job(backend, make_request)
    assert backend.store.cancel(job_id)
    final = backend.store.stream_events(job_id)[-1]
    assert final.type is StreamEventType.ERROR
    assert final.error is not None
    assert isinstance(error_from_dict(final.error), JobCancelled)


def test_a_job_that_does_not_stream_gets_no_stream_events(
    backend: Backend, make_request: Callable[..., Request]
) -> None:
    job_id = backend.store.new_job_id()
    backend.store.create(job_id, make_request(), ROUTE)
    assert backend.store.finish(job_id, JobStatus.CANCELLED, vendor=None)
    assert backend.store.stream_events(job_id) == []


def test_every_event_is_also_published_on_the_jobs_channel(
    backend: Backend, make_request: Callable[..., Request]
) -> None:
    job_id = streaming_job(backend, make_request)
    pubsub = backend.store.redis.pubsub()
    pubsub.subscribe(backend.store.keys.channel(job_id))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    backend.append(job_id, 0, "Hi")
    assert done(backend, job_id)
    published = []
    while len(published) < 2:
        message = pubsub.get_message(timeout=5)
        assert message is not None, "a published event did not arrive"
        published.append(message["data"])
    pubsub.close()
    buffered = [e.model_dump_json(exclude_none=True) for e in backend.store.stream_events(job_id)]
    assert [p.decode() if isinstance(p, bytes) else p for p in published] == [
        _compact(b) for b in buffered
    ]


def _compact(event_json: str) -> str:
    return json.dumps(json.loads(event_json), separators=(",", ":"))
