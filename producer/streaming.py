"""Following a job's stream: subscribe, replay, then listen, by one set of rules.

`follow` (behind `Client.stream`) and `follow_async` (behind `AsyncClient.stream`)
subscribe to the job's channel first, then replay its buffer, then listen; they
hand every event they read, from either, to a `StreamFollower`, which does no
I/O and keeps both to the same rules:

- Each event is delivered once, in `seq` order: an event at or below the last
  delivered seq is a duplicate (the replay and the channel overlap by design).
- A live event past `last + 1` means one was missed: read the buffer again.
- `done` ends the stream; `error` raises the job's typed error.
- While nothing arrives, look at the job about once a second. Still queued,
  never started, after the start timeout: `TimeoutError`. Ended without a
  terminal event seen: read the buffer once more (the terminal event is written
  with the end, atomically), and if it holds none (the job does not stream) the
  stream is made from the job's record: its reply as one chunk, then `done`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Generator, Iterable, Iterator
from itertools import chain
from typing import Any

import redis
import redis.asyncio

from dispatcher.errors import DispatcherError, JobCancelled, error_from_dict
from dispatcher.models import JobRecord, JobStatus, StreamEvent, StreamEventType, ToolCall
from dispatcher.state.records import JobGlance
from dispatcher.state.store import JobStore
from dispatcher.state.store_async import AsyncJobReader
from producer.pubsub_pool import PubSubPool

__all__ = [
    "DEFAULT_START_TIMEOUT_S",
    "STATUS_CHECK_S",
    "StreamFollower",
    "follow",
    "follow_async",
    "text_of",
    "tool_calls_of",
]

# A job that no worker has picked up within a minute is usually queued for a vendor
# no worker serves; the caller hears of it instead of waiting forever.
DEFAULT_START_TIMEOUT_S = 60.0
# How often a silent stream looks at its job, and the longest single wait for a
# message: quick enough to notice an end soon, rare enough to cost Redis nothing.
STATUS_CHECK_S = 1.0
# Redis confirms a subscription within a round trip; this only bounds a broken connection.
SUBSCRIBE_TIMEOUT_S = 5.0


def text_of(events: Iterable[StreamEvent]) -> str:
    """The reply the events spell: their chunks' text, started over at every `reset`."""
    parts: list[str] = []
    for event in events:
        if event.type is StreamEventType.RESET:
            parts.clear()
        elif event.type is StreamEventType.CHUNK and event.delta:
            parts.append(event.delta)
    return "".join(parts)


def tool_calls_of(events: Iterable[StreamEvent]) -> list[ToolCall]:
    """The tool calls the events' pieces spell, in call order, started over at every `reset`."""
    calls: dict[int, dict[str, str]] = {}
    for event in events:
        if event.type is StreamEventType.RESET:
            calls.clear()
        elif event.type is StreamEventType.CHUNK and event.tool_calls:
            for piece in event.tool_calls:
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = piece.id or call["id"]
                call["name"] = piece.name or call["name"]
                call["arguments"] += piece.arguments
    return [
        ToolCall.model_validate(
            {"id": call["id"], "function": {"name": call["name"], "arguments": call["arguments"]}}
        )
        for _, call in sorted(calls.items())
    ]


class StreamFollower:
    """Orders one job's stream events and decides when to look at the job; does no I/O."""

    def __init__(
        self, job_id: str, *, after: int, start_timeout_s: float, streams: bool, now: float
    ) -> None:
        """Follow `job_id` from the event after seq `after`, starting at monotonic time `now`.

        Args:
            streams: whether the job's request streams; a job that does not has no events
                of its own, so its stream is made from its record once it ends.
        """
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError(f"after must be a seq number >= 0, got {after!r}")
        if start_timeout_s < 0:
            raise ValueError(f"start_timeout_s must be >= 0, got {start_timeout_s}")
        self.job_id = job_id
        self.streams = streams
        self.last = after
        self.finished = False
        self.start_timeout_s = start_timeout_s
        self._start_deadline = now + start_timeout_s
        self._next_check = now  # at once: the job may have ended before we subscribed

    # --- events ------------------------------------------------------------------

    def deliver(self, events: Iterable[StreamEvent]) -> Iterator[StreamEvent]:
        """The events not delivered yet, in order, up to the terminal one.

        Raises:
            DispatcherError: at an `error` event, the job's typed error (e.g. `VendorAuthError`).
        """
        for event in events:
            if self.finished:
                return
            if event.seq <= self.last:
                # Seen already (replayed and heard live, or published twice), or at or
                # before `after`; a terminal one there means the caller has seen the end.
                if event.type.is_terminal:
                    self.finished = True
                    return
                continue
            self.last = event.seq
            self.finished = event.type.is_terminal
            if event.type is StreamEventType.ERROR:
                raise stream_error(event)
            yield event

    def missed_before(self, event: StreamEvent) -> bool:
        """True when `event` skips past events not delivered yet: read the buffer again."""
        return event.seq > self.last + 1

    def heard(self, now: float) -> None:
        """Note that an event arrived: the job is alive, so the next look can wait."""
        self._next_check = max(self._next_check, now + STATUS_CHECK_S)

    # --- looking at the job ---------------------------------------------------------

    def check_due(self, now: float) -> bool:
        """True when it is time to look at the job's record."""
        return now >= self._next_check

    def look_now(self) -> None:
        """Look at the job at the next turn (it was seen to end)."""
        self._next_check = float("-inf")

    def wait_s(self, now: float) -> float:
        """How long to wait for the next message before looking at the job again."""
        return min(STATUS_CHECK_S, max(0.0, self._next_check - now))

    def has_ended(self, glance: JobGlance, now: float) -> bool:
        """Note a look at the job (its status, whether it started): True once it has ended.

        Raises:
            TimeoutError: the job is still queued, never started, after the start timeout.
        """
        if glance.status.is_terminal:
            return True
        # A job queued again for a retry has started; only one no worker took counts.
        never_started = glance.status is JobStatus.QUEUED and not glance.started
        if never_started and now >= self._start_deadline:
            raise TimeoutError(
                f"job {self.job_id} never started: still queued after "
                f"{self.start_timeout_s:g} s; is a worker consuming its queue"
                f"{f' {glance.queue}' if glance.queue else ''}? It stays queued: "
                "stream again, or cancel it"
            )
        self._next_check = now + STATUS_CHECK_S
        if never_started:
            self._next_check = min(self._next_check, self._start_deadline)
        return False

    def ending_of(self, record: JobRecord) -> Iterator[StreamEvent]:
        """The end of an ended job's stream when its buffer holds no terminal event.

        A job that does not stream gets its whole reply as one chunk (seq 1) and
        `done` (seq 2), or its typed error raised; a streaming job that somehow has
        no terminal event gets the same after its last seq, behind a `reset`.
        """
        events = _events_of(record, first_seq=self.last + 1 if self.streams else 1)
        if self.streams and self.last > 0 and events[0].type is StreamEventType.CHUNK:
            reset = StreamEvent(seq=self.last + 1, type=StreamEventType.RESET, job_id=record.job_id)
            events = [reset, *(e.model_copy(update={"seq": e.seq + 1}) for e in events)]
        yield from self.deliver(events)
        self.finished = True  # nothing more will come, even when `after` skipped it all


def follow(store: JobStore, follower: StreamFollower) -> Generator[StreamEvent, None, None]:
    """Follow a job's stream through a blocking Redis client; see the module docstring."""
    # A PubSub holds a connection of its own, so the store's commands never wait on it.
    pubsub = store.redis.pubsub()
    try:
        _subscribe(pubsub, store.keys.channel(follower.job_id))
        # The whole buffer, every time: `deliver` skips what was seen, and a terminal
        # event among those still ends the stream (a resume after the end).
        yield from follower.deliver(store.stream_events(follower.job_id))
        while not follower.finished:
            yield from _turn(store, pubsub, follower)
    finally:
        pubsub.close()  # unsubscribes and hands the connection back, however we got here


async def follow_async(
    reader: AsyncJobReader, follower: StreamFollower, pubsubs: PubSubPool
) -> AsyncGenerator[StreamEvent, None]:
    """Follow a job's stream through an asyncio Redis client; see the module docstring.

    `pubsubs`: where the pub/sub connection comes from and goes back to, unsubscribed
    however the stream ended.
    """
    pubsub = pubsubs.take()
    channel = reader.keys.channel(follower.job_id)
    try:
        await _subscribe_async(pubsub, channel)
        replayed = await reader.stream_events(follower.job_id)
        for event in follower.deliver(replayed):
            yield event
        while not follower.finished:
            for event in await _turn_async(reader, pubsub, follower, channel):
                yield event
    finally:
        await pubsubs.give_back(pubsub)


def _turn(
    store: JobStore, pubsub: redis.client.PubSub, follower: StreamFollower
) -> Iterator[StreamEvent]:
    """Wait once for news of the job; the events it brought, delivered as they are taken."""
    job_id = follower.job_id
    now = time.monotonic()
    if follower.check_due(now):
        record = store.get(job_id)
        if follower.has_ended(JobGlance.of(record), now):
            # The terminal event is written with the end: the buffer holds it now.
            buffered = store.stream_events(job_id)
            return chain(follower.deliver(buffered), follower.ending_of(record))
    elif not follower.streams:
        # Nothing is ever published for it: wake as soon as it ends instead.
        if store.wait_until_ended(job_id, follower.wait_s(now)):
            follower.look_now()
    else:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=follower.wait_s(now))
        live = _event_in(message)
        if live is not None:
            follower.heard(time.monotonic())
            missed = store.stream_events(job_id) if follower.missed_before(live) else []
            return follower.deliver([*missed, live])
    return iter(())


async def _turn_async(
    reader: AsyncJobReader,
    pubsub: redis.asyncio.client.PubSub,
    follower: StreamFollower,
    channel: str,
) -> Iterator[StreamEvent]:
    """`_turn` for an asyncio client."""
    job_id = follower.job_id
    now = time.monotonic()
    if follower.check_due(now):
        # A glance while it runs; the whole record only once it has ended.
        if follower.has_ended(await reader.glance(job_id), now):
            record = await reader.get(job_id)
            buffered = await reader.stream_events(job_id)
            return chain(follower.deliver(buffered), follower.ending_of(record))
    elif not follower.streams:
        if await reader.wait_until_ended(job_id, follower.wait_s(now)):
            follower.look_now()
    else:
        message = await pubsub.get_message(
            ignore_subscribe_messages=True, timeout=follower.wait_s(now)
        )
        live = _event_in(message, channel)
        if live is not None:
            follower.heard(time.monotonic())
            missed = []
            if follower.missed_before(live):
                missed = await reader.stream_events(job_id)
            return follower.deliver([*missed, live])
    return iter(())


def _subscribe(pubsub: redis.client.PubSub, channel: str) -> None:
    """Subscribe, and wait until Redis confirms: anything published afterwards reaches us."""
    pubsub.subscribe(channel)
    deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
    while (remaining := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(timeout=min(remaining, STATUS_CHECK_S))
        if message is not None and message["type"] == "subscribe":
            return
    raise redis.TimeoutError(f"Redis did not confirm the subscription to {channel}")


async def _subscribe_async(pubsub: redis.asyncio.client.PubSub, channel: str) -> None:
    """`_subscribe` for an asyncio client."""
    await pubsub.subscribe(channel)
    deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
    while (remaining := deadline - time.monotonic()) > 0:
        message = await pubsub.get_message(timeout=min(remaining, STATUS_CHECK_S))
        if message is not None and message["type"] == "subscribe":
            return
    raise redis.TimeoutError(f"Redis did not confirm the subscription to {channel}")


def _event_in(message: dict[str, Any] | None, channel: str | None = None) -> StreamEvent | None:
    """The stream event a pub/sub message carries; None for no message, another kind, or
    (given `channel`) another channel's: a reused connection may still hold one."""
    if message is None or message["type"] != "message":
        return None
    if channel is not None and _text_of(message["channel"]) != channel:
        return None
    return StreamEvent.model_validate_json(message["data"])


def _text_of(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def stream_error(event: StreamEvent) -> DispatcherError:
    """The typed error an `error` event carries, naming the job."""
    data = dict(event.error or {"message": f"job {event.job_id} failed"})
    data["job_id"] = data.get("job_id") or event.job_id
    return error_from_dict(data)


def _events_of(record: JobRecord, first_seq: int) -> list[StreamEvent]:
    """An ended job's outcome as stream events: chunk and `done`, or one `error`."""
    job_id = record.job_id
    response = record.response
    if record.status is JobStatus.SUCCEEDED and response is not None:
        return [
            StreamEvent(
                seq=first_seq,
                type=StreamEventType.CHUNK,
                job_id=job_id,
                attempt=record.attempt,
                delta=response.content,
            ),
            StreamEvent(
                seq=first_seq + 1,
                type=StreamEventType.DONE,
                job_id=job_id,
                vendor=response.vendor,
                model=response.model,
                finish_reason=response.finish_reason,
                usage=response.usage,
                cost_usd=response.cost_usd,
            ),
        ]
    if record.status is JobStatus.FAILED and record.error is not None:
        error = {**record.error.model_dump(), "job_id": job_id}
    elif record.status is JobStatus.CANCELLED:
        error = JobCancelled(f"job {job_id} was cancelled", job_id=job_id).to_dict()
    else:
        message = f"job {job_id} ended {record.status.value} without a result"
        error = DispatcherError(message, job_id=job_id).to_dict()
    return [StreamEvent(seq=first_seq, type=StreamEventType.ERROR, job_id=job_id, error=error)]
