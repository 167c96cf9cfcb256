"""Following a job's stream with `Client.stream` and `AsyncClient.stream`, on fakeredis.

Workers are played by a `JobStore` on its own connection to the same fake server,
publishing through the real Lua scripts (APPEND, FINISH), so seq numbers, resets
and terminal events are exactly what a worker would write.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio

from dispatcher import (
    DispatcherError,
    JobCancelled,
    JobNotFound,
    JobStatus,
    Request,
    Response,
    Settings,
    Usage,
    VendorAuthError,
)
from dispatcher.broker.messages import RunJob
from dispatcher.models import JobEvent, JobEventKind, StreamEvent, StreamEventType, ToolCallDelta
from dispatcher.state.scripts import APPEND
from dispatcher.state.store import PENDING_TTL_S, TERMINAL, JobStore, stream_event_body
from dispatcher.state.store_async import AsyncStreamWriter
from producer import AsyncClient, Client, text_of, tool_calls_of

PREFIX = "llmd"
# Generous bounds: a stream that works delivers in milliseconds.
PROMPTLY_S = 5.0
REPLY = Response(
    content="Hello",
    model="gpt-4o-mini",
    vendor="openai",
    usage=Usage(prompt_tokens=5, completion_tokens=1, total_tokens=6),
    cost_usd=0.001,
)


class Worker:
    """What a worker writes for a job, through the store's real scripts, on its own connection."""

    def __init__(self, server: fakeredis.FakeServer) -> None:
        self.store = JobStore(fakeredis.FakeRedis(server=server), PREFIX)
        self._append = self.store.redis.register_script(APPEND)

    def start(self, job_id: str, attempt: int = 0) -> None:
        assert self.store.start(job_id, attempt, "openai") == "ok"

    def chunk(
        self, job_id: str, delta: str, attempt: int = 0, *, channel: str | None = None
    ) -> int:
        """Append a delta; `channel` overrides where it is published (to lose the message)."""
        body = stream_event_body(
            {"type": "chunk", "job_id": job_id, "attempt": attempt, "delta": delta, "emitted_at": 1}
        )
        keys = [self.store.keys.job(job_id), self.store.keys.stream(job_id)]
        channel = channel or self.store.keys.channel(job_id)
        seq = self._append(
            keys=keys, args=[attempt, channel, job_id, body, TERMINAL, PENDING_TTL_S]
        )
        assert seq > 0
        return int(seq)

    def retry(self, job_id: str, to_attempt: int) -> None:
        event = JobEvent(kind=JobEventKind.RETRY, at=datetime.now(UTC), attempt=to_attempt)
        self.store.reschedule(
            job_id, from_attempt=to_attempt - 1, to_attempt=to_attempt, event=event
        )
        self.start(job_id, to_attempt)

    def succeed(self, job_id: str, *, stream: bool = True) -> None:
        assert self.store.finish(
            job_id, JobStatus.SUCCEEDED, vendor="openai", response=REPLY, stream=stream
        )

    def fail(self, job_id: str, error: DispatcherError, *, stream: bool = True) -> None:
        assert self.store.finish(
            job_id, JobStatus.FAILED, vendor="openai", error=error, stream=stream
        )


class Listening:
    """Runs worker actions in another thread, each once the stream waits for a live message."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.waiting = threading.Event()
        self.threads: list[threading.Thread] = []
        sync_get, async_get = (
            redis.client.PubSub.get_message,
            redis.asyncio.client.PubSub.get_message,
        )

        def get_message(pubsub: Any, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("ignore_subscribe_messages"):  # the follow loop, not the subscribe
                self.waiting.set()
            return sync_get(pubsub, *args, **kwargs)

        async def get_message_async(pubsub: Any, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("ignore_subscribe_messages"):
                self.waiting.set()
            return await async_get(pubsub, *args, **kwargs)

        monkeypatch.setattr(redis.client.PubSub, "get_message", get_message)
        monkeypatch.setattr(redis.asyncio.client.PubSub, "get_message", get_message_async)

    def then(self, *actions: Callable[[], object]) -> None:
        """Run `actions` as soon as the stream next waits on its channel."""
        self.waiting.clear()

        def run() -> None:
            if self.waiting.wait(PROMPTLY_S):
                for action in actions:
                    action()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(PROMPTLY_S)


@pytest.fixture
def settings() -> Settings:
    return Settings.load(openai_api_key="sk-test-0123456789")


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def fake_redis(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def sent() -> list[RunJob]:
    return []


@pytest.fixture
def client(settings: Settings, fake_redis: fakeredis.FakeRedis, sent: list[RunJob]) -> Client:
    def send(message: RunJob, queue: str, priority: int) -> None:
        sent.append(message)

    return Client(settings, redis_client=fake_redis, send=send, rng=random.Random(0))


@pytest.fixture
def worker(server: fakeredis.FakeServer) -> Worker:
    return Worker(server)


@pytest.fixture
def listening(monkeypatch: pytest.MonkeyPatch) -> Iterator[Listening]:
    watcher = Listening(monkeypatch)
    yield watcher
    watcher.join()


def request_dict(*, stream: bool = True, **overrides: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "Say hello."}]
    return {"model": "gpt-4o-mini", "messages": messages, "stream": stream, **overrides}


def shape(events: list[StreamEvent]) -> list[tuple[int, str, str | None]]:
    return [(e.seq, e.type.value, e.delta) for e in events]


def subscribers(fake_redis: fakeredis.FakeRedis, client: Client, job_id: str) -> int:
    [(_, count)] = fake_redis.pubsub_numsub(client.store.keys.channel(job_id))
    return int(count)


# --- text_of ------------------------------------------------------------------------------


def test_text_of_joins_the_chunks_and_starts_over_at_every_reset() -> None:
    def event(seq: int, kind: str, delta: str | None = None) -> StreamEvent:
        return StreamEvent(seq=seq, type=StreamEventType(kind), job_id="a" * 32, delta=delta)

    events = [
        event(1, "chunk", "Hel"),
        event(2, "chunk", "l"),
        event(3, "reset"),
        event(4, "chunk", "Hel"),
        event(5, "chunk", "lo"),
        event(6, "done"),
    ]
    assert text_of(events) == "Hello"
    assert text_of([]) == ""


def test_tool_calls_of_joins_the_pieces_by_index_and_starts_over_at_every_reset() -> None:
    def chunk(seq: int, *pieces: ToolCallDelta) -> StreamEvent:
        return StreamEvent(
            seq=seq, type=StreamEventType.CHUNK, job_id="a" * 32, delta="", tool_calls=list(pieces)
        )

    events = [
        chunk(1, ToolCallDelta(index=0, id="call_old", name="f", arguments="{")),
        StreamEvent(seq=2, type=StreamEventType.RESET, job_id="a" * 32),
        chunk(
            3,
            ToolCallDelta(index=0, id="call_a", name="f"),
            ToolCallDelta(index=0, arguments='{"x":'),
        ),
        chunk(4, ToolCallDelta(index=1, id="call_b", name="g", arguments="{}")),
        chunk(5, ToolCallDelta(index=0, arguments="1}")),
        StreamEvent(seq=6, type=StreamEventType.DONE, job_id="a" * 32),
    ]
    assert [(c.id, c.name, c.arguments) for c in tool_calls_of(events)] == [
        ("call_a", "f", '{"x":1}'),
        ("call_b", "g", "{}"),
    ]
    assert tool_calls_of(events[:2]) == []  # what came before the reset is dropped


# --- replay ------------------------------------------------------------------------------


def test_a_finished_stream_is_replayed_from_the_buffer_in_order(
    client: Client, worker: Worker, fake_redis: fakeredis.FakeRedis
) -> None:
    job_id = client.submit(request_dict())
    worker.start(job_id)
    worker.chunk(job_id, "Hel")
    worker.chunk(job_id, "lo")
    worker.succeed(job_id)
    events = list(client.stream(job_id))
    assert shape(events) == [(1, "chunk", "Hel"), (2, "chunk", "lo"), (3, "done", None)]
    done = events[-1]
    assert (done.finish_reason, done.usage, done.cost_usd) == ("stop", REPLY.usage, 0.001)
    assert (done.vendor, done.model) == ("openai", "gpt-4o-mini")
    assert text_of(events) == "Hello"
    assert subscribers(fake_redis, client, job_id) == 0


def test_a_stream_resumes_after_the_seq_given(client: Client, worker: Worker) -> None:
    job_id = client.submit(request_dict())
    worker.start(job_id)
    for delta in ("a", "b", "c"):
        worker.chunk(job_id, delta)
    worker.succeed(job_id)
    assert shape(list(client.stream(job_id, after=2))) == [(3, "chunk", "c"), (4, "done", None)]


def test_a_stream_resumed_after_its_end_yields_nothing(client: Client, worker: Worker) -> None:
    job_id = client.submit(request_dict())
    worker.start(job_id)
    worker.chunk(job_id, "Hello")
    worker.fail(job_id, VendorAuthError("refused"))
    assert list(client.stream(job_id, after=2)) == []  # the error at seq 2 was seen already
    assert list(client.stream(job_id, after=7)) == []


def test_a_reset_is_passed_through_and_text_of_keeps_only_the_last_attempt(
    client: Client, worker: Worker
) -> None:
    job_id = client.submit(request_dict())
    worker.start(job_id)
    worker.chunk(job_id, "Hel")
    worker.retry(job_id, 1)
    worker.chunk(job_id, "Hello", attempt=1)
    worker.succeed(job_id)
    events = list(client.stream(job_id))
    assert shape(events) == [
        (1, "chunk", "Hel"),
        (2, "reset", None),
        (3, "chunk", "Hello"),
        (4, "done", None),
    ]
    assert events[1].attempt == 1
    assert text_of(events) == "Hello"


def test_an_error_event_raises_the_typed_error_after_the_events_before_it(
    client: Client, worker: Worker, fake_redis: fakeredis.FakeRedis
) -> None:
    job_id = client.submit(request_dict())
    worker.start(job_id)
    worker.chunk(job_id, "Hel")
    worker.fail(job_id, VendorAuthError("the key was refused", vendor="openai", status_code=401))
    seen: list[StreamEvent] = []
    with pytest.raises(VendorAuthError, match="the key was refused") as raised:
        seen.extend(client.stream(job_id))
    assert shape(seen) == [(1, "chunk", "Hel")]
    assert (raised.value.job_id, raised.value.vendor, raised.value.status_code) == (
        job_id,
        "openai",
        401,
    )
    assert subscribers(fake_redis, client, job_id) == 0


def test_a_cancelled_streaming_job_raises_job_cancelled(client: Client) -> None:
    job_id = client.submit(request_dict())
    assert client.cancel(job_id)
    with pytest.raises(JobCancelled):
        list(client.stream(job_id))


# --- live -------------------------------------------------------------------------------


def test_events_published_after_subscribing_arrive_live(
    client: Client, worker: Worker, listening: Listening, fake_redis: fakeredis.FakeRedis
) -> None:
    job_id = client.submit(request_dict())
    worker.start(job_id)
    events = client.stream(job_id)
    # The job is running, not ended: only the channel can bring this chunk.
    listening.then(lambda: worker.chunk(job_id, "Hel"))
    assert shape([next(events)]) == [(1, "chunk", "Hel")]
    assert subscribers(fake_redis, client, job_id) == 1
    listening.then(lambda: worker.chunk(job_id, "lo"), lambda: worker.succeed(job_id))
    assert shape(list(events)) == [(2, "chunk", "lo"), (3, "done", None)]
    assert subscribers(fake_redis, client, job_id) == 0


def test_duplicates_are_dropped_by_seq(
    client: Client,
    worker: Worker,
    listening: Listening,
    fake_redis: fakeredis.FakeRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = client.submit(request_dict())
    worker.start(job_id)
    replay = client.store.stream_events

    def publish_then_replay(*args: Any) -> list[StreamEvent]:
        # A chunk published between subscribing and replaying: heard live and replayed.
        if not fake_redis.exists(client.store.keys.stream(job_id)):
            worker.chunk(job_id, "Hel")
        return replay(*args)

    monkeypatch.setattr(client.store, "stream_events", publish_then_replay)
    channel = client.store.keys.channel(job_id)

    def republish_first() -> None:
        fake_redis.publish(channel, replay(job_id)[0].model_dump_json())

    listening.then(
        republish_first, lambda: worker.chunk(job_id, "lo"), lambda: worker.succeed(job_id)
    )
    events = list(client.stream(job_id))
    assert shape(events) == [(1, "chunk", "Hel"), (2, "chunk", "lo"), (3, "done", None)]


def test_a_missed_message_is_filled_in_from_the_buffer(
    client: Client, worker: Worker, listening: Listening
) -> None:
    job_id = client.submit(request_dict())
    worker.start(job_id)
    worker.chunk(job_id, "a")
    events = client.stream(job_id)
    assert shape([next(events)]) == [(1, "chunk", "a")]
    listening.then(
        lambda: worker.chunk(job_id, "b", channel="nobody-listens"),  # buffered, never heard
        lambda: worker.chunk(job_id, "c"),
    )
    assert shape([next(events), next(events)]) == [(2, "chunk", "b"), (3, "chunk", "c")]
    events.close()


def test_closing_the_iterator_early_unsubscribes(
    client: Client, worker: Worker, fake_redis: fakeredis.FakeRedis
) -> None:
    job_id = client.submit(request_dict())
    worker.start(job_id)
    worker.chunk(job_id, "Hel")
    events = client.stream(job_id)
    next(events)
    assert subscribers(fake_redis, client, job_id) == 1
    events.close()
    assert subscribers(fake_redis, client, job_id) == 0


# --- jobs that never start, do not stream, or do not exist --------------------------------------


def test_a_job_that_never_starts_raises_timeout_error_naming_it(
    client: Client, fake_redis: fakeredis.FakeRedis
) -> None:
    job_id = client.submit(request_dict())
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=f"job {job_id} never started"):
        list(client.stream(job_id, start_timeout_s=0.05))
    assert time.monotonic() - started < PROMPTLY_S
    assert subscribers(fake_redis, client, job_id) == 0


def test_a_job_that_does_not_stream_yields_its_reply_as_one_chunk_and_done(
    client: Client, worker: Worker
) -> None:
    job_id = client.submit(request_dict(stream=False))
    worker.start(job_id)
    worker.succeed(job_id, stream=False)
    events = list(client.stream(job_id))
    assert shape(events) == [(1, "chunk", "Hello"), (2, "done", None)]
    assert (events[1].usage, events[1].cost_usd) == (REPLY.usage, REPLY.cost_usd)
    assert (events[1].vendor, events[1].model) == (REPLY.vendor, REPLY.model)


def test_a_job_that_does_not_stream_is_followed_until_it_ends(
    client: Client, worker: Worker, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = client.submit(request_dict(stream=False))
    worker.start(job_id)
    blocked = threading.Event()
    blmove = fake_redis.blmove

    def blmove_and_tell(*args: Any, **kwargs: Any) -> Any:
        blocked.set()
        return blmove(*args, **kwargs)

    def finish_once_waiting() -> None:
        if blocked.wait(PROMPTLY_S):
            worker.succeed(job_id, stream=False)

    monkeypatch.setattr(fake_redis, "blmove", blmove_and_tell)
    finisher = threading.Thread(target=finish_once_waiting)
    finisher.start()
    assert text_of(client.stream(job_id)) == "Hello"
    finisher.join(PROMPTLY_S)


def test_a_job_that_does_not_stream_raises_the_error_it_failed_with(
    client: Client, worker: Worker
) -> None:
    job_id = client.submit(request_dict(stream=False))
    worker.fail(job_id, VendorAuthError("refused", vendor="openai"), stream=False)
    with pytest.raises(VendorAuthError, match="refused") as raised:
        list(client.stream(job_id))
    assert raised.value.job_id == job_id


def test_a_streaming_job_ended_without_a_terminal_event_ends_from_its_record(
    client: Client, worker: Worker
) -> None:
    job_id = client.submit(request_dict())
    worker.start(job_id)
    worker.chunk(job_id, "Hel")
    worker.succeed(job_id, stream=False)  # as if written by something that forgot the stream
    events = list(client.stream(job_id))
    assert shape(events) == [
        (1, "chunk", "Hel"),
        (2, "reset", None),
        (3, "chunk", "Hello"),
        (4, "done", None),
    ]
    assert text_of(events) == "Hello"


@pytest.mark.parametrize("job_id", ["0" * 32, "not-a-job-id", "../llmd:stats"])
def test_stream_of_an_unknown_or_malformed_id_raises_job_not_found(
    client: Client, job_id: str
) -> None:
    with pytest.raises(JobNotFound):
        client.stream(job_id)


@pytest.mark.parametrize("kwargs", [{"after": -1}, {"start_timeout_s": -1.0}])
def test_stream_rejects_bad_arguments(client: Client, kwargs: dict[str, Any]) -> None:
    job_id = client.submit(request_dict())
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        client.stream(job_id, **kwargs)


# --- send_streaming --------------------------------------------------------------------


@pytest.mark.parametrize("as_model", [True, False])
def test_send_streaming_submits_a_streaming_job_and_follows_it(
    client: Client, worker: Worker, sent: list[RunJob], as_model: bool
) -> None:
    data = request_dict(stream=False)
    request = Request.model_validate(data) if as_model else data
    events = client.send_streaming(request, start_timeout_s=PROMPTLY_S)
    [message] = sent  # submitted at the call, before the first event is asked for
    assert client.get(message.job_id).request.stream is True
    worker.start(message.job_id)
    worker.chunk(message.job_id, "Hello")
    worker.succeed(message.job_id)
    assert text_of(events) == "Hello"


# --- AsyncClient ----------------------------------------------------------------------------


@pytest.fixture
async def async_client(
    settings: Settings,
    server: fakeredis.FakeServer,
    fake_redis: fakeredis.FakeRedis,
    sent: list[RunJob],
) -> AsyncIterator[AsyncClient]:
    async_redis = fakeredis.FakeAsyncRedis(server=server)
    async with AsyncClient(
        settings,
        redis_client=async_redis,
        sync_redis_client=fake_redis,
        send=lambda message, queue, priority: sent.append(message),
    ) as client:
        yield client
    await async_redis.aclose()


async def test_async_stream_replays_what_the_worker_s_writer_published(
    async_client: AsyncClient, worker: Worker, server: fakeredis.FakeServer
) -> None:
    job_id = await async_client.submit(request_dict())
    worker.start(job_id)
    writer_redis = fakeredis.FakeAsyncRedis(server=server)
    writer = AsyncStreamWriter(writer_redis, PREFIX)
    assert await writer.append_chunk(job_id, 0, "Hel", 1.0) == 1
    assert await writer.append_chunk(job_id, 0, "lo", 2.0) == 2
    await writer_redis.aclose()
    worker.succeed(job_id)
    events = [event async for event in async_client.stream(job_id)]
    assert shape(events) == [(1, "chunk", "Hel"), (2, "chunk", "lo"), (3, "done", None)]
    resumed = [event async for event in async_client.stream(job_id, after=1)]
    assert shape(resumed) == [(2, "chunk", "lo"), (3, "done", None)]


async def test_async_stream_follows_live_events_and_drops_duplicates(
    async_client: AsyncClient,
    worker: Worker,
    listening: Listening,
    fake_redis: fakeredis.FakeRedis,
) -> None:
    job_id = await async_client.submit(request_dict())
    worker.start(job_id)
    worker.chunk(job_id, "Hel")
    channel = async_client.reader.keys.channel(job_id)
    first = worker.store.stream_events(job_id)[0]
    listening.then(
        lambda: fake_redis.publish(channel, first.model_dump_json()),
        lambda: worker.chunk(job_id, "lo", channel="nobody-listens"),
        lambda: worker.chunk(job_id, "!"),
        lambda: worker.succeed(job_id),
    )
    events = [event async for event in async_client.stream(job_id)]
    assert shape(events) == [
        (1, "chunk", "Hel"),
        (2, "chunk", "lo"),
        (3, "chunk", "!"),
        (4, "done", None),
    ]
    [(_, count)] = fake_redis.pubsub_numsub(channel)
    assert count == 0


async def test_async_stream_raises_as_the_sync_stream_does(
    async_client: AsyncClient, worker: Worker
) -> None:
    with pytest.raises(JobNotFound):
        [event async for event in async_client.stream("not-a-job-id")]
    failed, queued = [await async_client.submit(request_dict()) for _ in range(2)]
    worker.fail(failed, VendorAuthError("refused", vendor="openai"))
    with pytest.raises(VendorAuthError, match="refused"):
        [event async for event in async_client.stream(failed)]
    with pytest.raises(TimeoutError, match=f"job {queued} never started"):
        [event async for event in async_client.stream(queued, start_timeout_s=0.05)]


async def test_async_stream_of_a_job_that_does_not_stream_yields_its_reply(
    async_client: AsyncClient, worker: Worker
) -> None:
    job_id = await async_client.submit(request_dict(stream=False))
    worker.succeed(job_id, stream=False)
    events = [event async for event in async_client.stream(job_id)]
    assert shape(events) == [(1, "chunk", "Hello"), (2, "done", None)]


async def test_async_send_streaming_submits_with_stream_and_closing_early_unsubscribes(
    async_client: AsyncClient,
    worker: Worker,
    sent: list[RunJob],
    fake_redis: fakeredis.FakeRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    submit = async_client.submit

    async def submit_and_work(request: Any) -> str:
        job_id = await submit(request)
        worker.start(job_id)
        worker.chunk(job_id, "Hel")
        return job_id

    monkeypatch.setattr(async_client, "submit", submit_and_work)
    events = async_client.send_streaming(request_dict(stream=False))
    assert sent == []  # an async generator: submitted when iteration starts
    assert shape([await anext(events)]) == [(1, "chunk", "Hel")]
    [message] = sent
    assert (await async_client.get(message.job_id)).request.stream is True
    channel = async_client.reader.keys.channel(message.job_id)
    assert fake_redis.pubsub_numsub(channel) == [(channel.encode(), 1)]
    await events.aclose()
    assert fake_redis.pubsub_numsub(channel) == [(channel.encode(), 0)]


async def test_a_second_stream_reuses_the_first_ones_connection_and_ignores_its_channel(
    async_client: AsyncClient,
    worker: Worker,
    fake_redis: fakeredis.FakeRedis,
) -> None:
    first, second = [await async_client.submit(request_dict()) for _ in range(2)]
    worker.start(first)
    worker.chunk(first, "one")
    worker.succeed(first)
    assert shape([e async for e in async_client.stream(first)]) == [
        (1, "chunk", "one"),
        (2, "done", None),
    ]
    pool = async_client._pubsubs
    (kept,) = pool._idle  # unsubscribed and kept, not closed
    assert pool.take() is kept

    # The connection still holds an unread message of the first job's channel when it
    # goes back (published before the unsubscribe, as a finished stream can leave one):
    # it comes before the next subscription's confirmation, and is never delivered.
    old_channel = async_client.reader.keys.channel(first)
    await kept.subscribe(old_channel)
    # The first stream's unsubscribe confirmation comes first, then this subscribe's.
    kinds = [(await kept.get_message(timeout=1) or {}).get("type") for _ in range(2)]
    assert kinds == ["unsubscribe", "subscribe"]
    stale = worker.store.stream_events(first)[0]
    fake_redis.publish(old_channel, stale.model_dump_json())
    await pool.give_back(kept)

    worker.start(second)
    worker.chunk(second, "two")
    worker.succeed(second)
    events = [e async for e in async_client.stream(second)]
    assert shape(events) == [(1, "chunk", "two"), (2, "done", None)]
    assert {e.job_id for e in events} == {second}
    assert pool._idle == [kept]


async def test_following_a_running_job_glances_and_never_reads_its_whole_record(
    async_client: AsyncClient, worker: Worker, listening: Listening, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream start and the looks while it runs read a few fields (a long prompt is
    never parsed for them); the never-started error still names the job's queue."""
    whole_reads: list[str] = []
    real_get = async_client.reader.get

    async def counted_get(job_id: str) -> Any:
        whole_reads.append(job_id)
        return await real_get(job_id)

    monkeypatch.setattr(async_client.reader, "get", counted_get)
    job_id = await async_client.submit(request_dict())
    worker.start(job_id)
    listening.then(lambda: worker.chunk(job_id, "Hel"), lambda: worker.succeed(job_id))
    events = [event async for event in async_client.stream(job_id)]
    assert shape(events) == [(1, "chunk", "Hel"), (2, "done", None)]
    assert whole_reads == []

    queued = await async_client.submit(request_dict())
    glance = await async_client.reader.glance(queued)
    assert (glance.status, glance.started, glance.queue) == (JobStatus.QUEUED, False, "llm.openai")
    with pytest.raises(TimeoutError, match=r"consuming its queue llm\.openai"):
        [event async for event in async_client.stream(queued, start_timeout_s=0.05)]
    assert await async_client.reader.streams(queued) is True
    with pytest.raises(JobNotFound):
        await async_client.reader.glance("0" * 32)
