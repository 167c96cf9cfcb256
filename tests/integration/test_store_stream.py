"""Stream events in the job store: numbering, replay, resets and the one terminal event."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import fakeredis
import pytest
import redis
import redis.asyncio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from dispatcher import FinishReason, JobStatus, Request, Response, Route, Usage, VendorUnavailable
from dispatcher.errors import JobCancelled, error_from_dict
from dispatcher.models import JobEvent, JobEventKind, StreamEventType
from dispatcher.state.store import JobStore
from dispatcher.state.store_async import AsyncStreamWriter
from producer.cli.tools.embedded_redis import EmbeddedRedis

pytestmark = pytest.mark.integration

T = TypeVar("T")
PREFIX = "llmd-stream-test"
ROUTE = Route(vendor="openai", model="gpt-4o-mini", queue="llm.openai")


@dataclass
class Loop:
    """Runs coroutines on an event loop of its own (anyio's portal, as the worker's)."""

    portal: BlockingPortal

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float) -> T:
        return self.portal.start_task_soon(lambda: coroutine).result(timeout_s)


@dataclass
class Backend:
    """A job store, and a stream writer on the same Redis driven by its own event loop."""

    store: JobStore
    writer: AsyncStreamWriter
    loop: Loop

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
    with start_blocking_portal() as portal:
        loop = Loop(portal)
        yield Backend(JobStore(sync_client, PREFIX), AsyncStreamWriter(async_client, PREFIX), loop)
        loop.run(async_client.aclose(), 10)
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
    assert (final.vendor, final.model) == ("openai", "gpt-4o-mini")
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


# --- group commit: many appends per round trip, deltas joined when the writer is behind ---


class CountingWriter(AsyncStreamWriter):
    """A stream writer that records how many appends each round trip carried."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        super().__init__(client, prefix)
        self.round_trips: list[int] = []

    async def _pipeline(self, batch: list[Any]) -> list[Any]:
        self.round_trips.append(len(batch))
        return await super()._pipeline(batch)


def counting(backend: Backend) -> CountingWriter:
    return CountingWriter(backend.writer.redis, PREFIX)


def test_deltas_offered_before_a_write_joins_them_go_out_as_one_event(
    backend: Backend, make_request: Callable[..., Request]
) -> None:
    job_id = streaming_job(backend, make_request)
    writer = counting(backend)

    async def offer_three_then_drain() -> list[bool]:
        wanted = [writer.offer(job_id, 0, d, t) for d, t in (("Hel", 1.0), ("lo", 2.0), ("!", 3.0))]
        await writer.drain(job_id, 0)
        return wanted

    assert backend.loop.run(offer_three_then_drain(), 10) == [True, True, True]

    (event,) = backend.store.stream_events(job_id)
    assert (event.seq, event.delta, event.emitted_at) == (1, "Hello!", 1.0)
    assert writer.round_trips == [1]


def test_appends_of_many_streams_in_one_loop_turn_share_one_round_trip(
    backend: Backend, make_request: Callable[..., Request]
) -> None:
    jobs = [streaming_job(backend, make_request) for _ in range(5)]
    writer = counting(backend)

    async def one_delta_each() -> list[int]:
        return list(
            await asyncio.gather(*(writer.append_chunk(j, 0, f"to {j}", 1.0) for j in jobs))
        )

    assert backend.loop.run(one_delta_each(), 10) == [1] * 5
    assert writer.round_trips == [5]
    for job_id in jobs:
        assert [e.delta for e in backend.store.stream_events(job_id)] == [f"to {job_id}"]


def test_deltas_offered_while_a_write_is_in_flight_keep_their_order(
    backend: Backend, make_request: Callable[..., Request]
) -> None:
    job_id = streaming_job(backend, make_request)
    writer = counting(backend)
    words = [f"w{i} " for i in range(40)]

    async def offer_with_yields() -> None:
        for word in words:
            assert writer.offer(job_id, 0, word, 1.0)
            await asyncio.sleep(0)  # let the writer start its round trips meanwhile
        await writer.drain(job_id, 0)

    backend.loop.run(offer_with_yields(), 10)

    events = backend.store.stream_events(job_id)
    assert "".join(e.delta or "" for e in events) == "".join(words)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert sum(writer.round_trips) == len(events) <= len(words)


async def written(writer: Any, job_id: str, attempt: int = 0) -> None:
    """Until the last append offered for the stream has been written (or has failed)."""
    await writer._streams[(job_id, attempt)].last


def test_offer_says_no_once_the_job_ended_and_drain_forgets_the_stream(
    backend: Backend, make_request: Callable[..., Request]
) -> None:
    job_id = streaming_job(backend, make_request)
    writer = backend.writer
    assert backend.append(job_id, 0, "Hello") == 1
    assert done(backend, job_id)

    async def offer_after_the_end() -> tuple[bool, bool]:
        first = writer.offer(job_id, 0, " late", 2.0)  # not known yet: the write will tell
        await writer.drain(job_id, 0)
        writer.offer(job_id, 0, " later", 3.0)
        await written(writer, job_id)  # its write found the job ended
        second = writer.offer(job_id, 0, " latest", 4.0)
        await writer.drain(job_id, 0)
        return first, second

    assert backend.loop.run(offer_after_the_end(), 10) == (True, False)
    assert [e.type for e in backend.store.stream_events(job_id)] == [
        StreamEventType.CHUNK,
        StreamEventType.DONE,
    ]
    assert writer._streams == {}


def test_appends_survive_redis_losing_its_scripts(
    backend: Backend, make_request: Callable[..., Request]
) -> None:
    job_id = streaming_job(backend, make_request)
    assert backend.append(job_id, 0, "Hello") == 1
    backend.store.redis.script_flush()

    assert backend.append(job_id, 0, " world") == 2

    assert [e.delta for e in backend.store.stream_events(job_id)] == ["Hello", " world"]


def test_a_failed_write_is_raised_to_the_stream_by_drain_and_by_later_offers(
    backend: Backend, make_request: Callable[..., Request]
) -> None:
    job_id = streaming_job(backend, make_request)
    writer = backend.writer

    async def broken_pipeline(batch: list[Any]) -> list[Any]:
        raise redis.ConnectionError("Redis went away")

    writer._pipeline = broken_pipeline  # type: ignore[method-assign]

    async def offer_and_drain() -> None:
        writer.offer(job_id, 0, "Hello", 1.0)
        await writer.drain(job_id, 0)

    with pytest.raises(redis.ConnectionError, match="Redis went away"):
        backend.loop.run(offer_and_drain(), 10)

    async def offer_twice() -> None:
        writer.offer(job_id, 0, "Hello", 1.0)
        with contextlib.suppress(redis.ConnectionError):
            await written(writer, job_id)  # its write failed
        writer.offer(job_id, 0, " again", 2.0)

    with pytest.raises(redis.ConnectionError, match="Redis went away"):
        backend.loop.run(offer_twice(), 10)
