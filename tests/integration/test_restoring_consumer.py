"""The countdown messages a lost connection drops are noted, then restored after the reconnect."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from celery.worker import state

from workers.kombu_patches.consumer import (
    LOST_FLUSH_S,
    UNDELIVERED,
    UNFINISHED_ACKS,
    EventPacer,
    RestoringConsumer,
    dropped_countdown_tags,
    finish_acks_later,
    keep_undelivered,
    restore,
)

pytestmark = pytest.mark.integration


@dataclass(eq=False)
class FakeMessage:
    delivery_tag: str


@dataclass(eq=False)
class FakeRequest:
    message: FakeMessage
    acknowledged: bool = False


@pytest.fixture
def requests() -> Iterator[list[FakeRequest]]:
    """Requests held in Celery's worker state for the test; the sets are emptied after."""
    held: list[FakeRequest] = []
    yield held
    for request in held:
        for requests_set in (
            state.scheduled_requests,
            state.active_requests,
            state.reserved_requests,
        ):
            requests_set.discard(request)


def hold(held: list[FakeRequest], tag: str, *sets: Any, acknowledged: bool = False) -> None:
    request = FakeRequest(FakeMessage(tag), acknowledged=acknowledged)
    held.append(request)
    for requests_set in sets:
        requests_set.add(request)


def test_only_waiting_unacknowledged_countdowns_count_as_dropped(
    requests: list[FakeRequest],
) -> None:
    hold(requests, "waiting", state.scheduled_requests)
    hold(requests, "running", state.scheduled_requests, state.active_requests)
    hold(requests, "due", state.scheduled_requests, state.reserved_requests)
    hold(requests, "acked", state.scheduled_requests, acknowledged=True)
    hold(requests, "plain", state.reserved_requests)
    assert dropped_countdown_tags() == ["waiting"]


@dataclass
class FakeQos:
    fail_from: int | None = None
    restored: list[str] = field(default_factory=list)

    def restore_by_tag(self, tag: str, leftmost: bool = False) -> None:
        assert leftmost
        if self.fail_from is not None and len(self.restored) >= self.fail_from:
            raise redis.ConnectionError("Connection refused")
        self.restored.append(tag)


@dataclass
class FakeChannel:
    qos: FakeQos


@dataclass
class FakeConnection:
    default_channel: FakeChannel
    connection_errors: tuple[type[BaseException], ...] = (redis.ConnectionError,)


def test_restore_puts_every_tag_back_in_its_queue() -> None:
    qos = FakeQos()
    assert restore(FakeConnection(FakeChannel(qos)), ["a", "b", "c"]) == []
    assert qos.restored == ["a", "b", "c"]


def test_tags_not_restored_when_redis_goes_again_are_kept_for_the_next_connect() -> None:
    qos = FakeQos(fail_from=1)
    assert restore(FakeConnection(FakeChannel(qos)), ["a", "b", "c"]) == ["b", "c"]
    assert qos.restored == ["a"]


class FakeAppendingQos:
    """kombu's Redis QoS as `keep_undelivered` sees it: `append` records a delivered message."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def append(self, message: Any, delivery_tag: str) -> None:
        if self.fail:
            raise redis.ConnectionError("Connection refused")


@dataclass
class FakeDelivered:
    _raw: dict[str, Any]
    delivery_info: dict[str, str]


class FakeRestoringChannel:
    def __init__(self, fail: bool = False) -> None:
        self.restored: list[tuple[Any, str, str, bool]] = []
        self.fail = fail

    def conn_or_acquire(self) -> Any:
        channel = self

        class Client:
            def __enter__(self) -> Any:
                return self

            def __exit__(self, *_: Any) -> None:
                return None

            def pipeline(self) -> Any:
                return self

            def execute(self) -> None:
                if channel.fail:
                    raise redis.ConnectionError("still down")

        return Client()

    def _do_restore_message(
        self, raw: Any, exchange: str, routing_key: str, pipe: Any, leftmost: bool = False
    ) -> None:
        self.restored.append((raw, exchange, routing_key, leftmost))


def test_a_message_whose_record_fails_is_kept_and_requeued_after_the_reconnect() -> None:
    qos_class = type("Qos", (FakeAppendingQos,), {})
    assert keep_undelivered(qos_class)
    assert not keep_undelivered(qos_class)  # patched once
    message = FakeDelivered({"body": "b"}, {"exchange": "llm.x", "routing_key": "llm.x"})
    qos_class(fail=False).append(message, "t1")
    assert len(UNDELIVERED) == 0
    with pytest.raises(redis.ConnectionError):
        qos_class(fail=True).append(message, "t2")
    assert len(UNDELIVERED) == 1

    still_down = FakeRestoringChannel(fail=True)
    UNDELIVERED.redo(FakeConnection(still_down))  # type: ignore[arg-type]
    assert len(UNDELIVERED) == 1, "kept while Redis refuses"
    channel = FakeRestoringChannel()
    UNDELIVERED.redo(FakeConnection(channel))  # type: ignore[arg-type]
    assert channel.restored == [({"body": "b"}, "llm.x", "llm.x", True)]
    assert len(UNDELIVERED) == 0


class Timers:
    """Stands in for the hub's `call_later`, and for the clock."""

    def __init__(self) -> None:
        self.now = 100.0
        self.armed: list[tuple[float, Any]] = []

    def clock(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any) -> None:
        self.armed.append((delay, callback))


def test_buffered_task_events_go_out_at_most_once_per_interval() -> None:
    timers, flushes = Timers(), []
    pacer = EventPacer(lambda: flushes.append(timers.now), interval_s=0.05, clock=timers.clock)

    pacer.offered(timers.call_later)  # the first event goes out at once
    assert flushes == [100.0]
    timers.now = 100.01
    pacer.offered(timers.call_later)  # the next wait for the interval, on one timer
    pacer.offered(timers.call_later)
    assert flushes == [100.0]
    assert [round(delay, 6) for delay, _ in timers.armed] == [0.04]

    timers.now = 100.05
    timers.armed[0][1]()
    assert flushes == [100.0, 100.05]
    timers.now = 100.2  # a quiet spell: the next event goes out at once again
    pacer.offered(timers.call_later)
    assert flushes == [100.0, 100.05, 100.2]
    assert len(timers.armed) == 1


def test_without_a_loop_or_when_stopping_events_go_out_at_once() -> None:
    timers, flushes = Timers(), []
    pacer = EventPacer(lambda: flushes.append(timers.now), interval_s=0.05, clock=timers.clock)
    pacer.offered(None)
    pacer.offered(None)
    pacer.flush_now()
    assert len(flushes) == 3
    assert timers.armed == []


def test_the_pacer_is_armed_until_its_timed_flush_and_a_lost_timer_is_replaced() -> None:
    timers, flushes = Timers(), []
    pacer = EventPacer(lambda: flushes.append(timers.now), interval_s=0.05, clock=timers.clock)
    pacer.offered(timers.call_later)
    assert not pacer.armed, "flushed at once: nothing due"

    timers.now = 100.01
    pacer.offered(timers.call_later)
    assert pacer.armed
    timers.armed[0][1]()
    assert not pacer.armed

    timers.now = 100.03  # within the interval of that flush (at 100.01): armed again
    pacer.offered(timers.call_later)
    assert pacer.armed
    timers.now = 100.06 + LOST_FLUSH_S + 0.01  # its timer (due at 100.06) never fired
    assert not pacer.armed
    pacer.offered(timers.call_later)  # the next event's wake flushes it
    assert flushes[-1] == timers.now


class FakeHub:
    def __init__(self) -> None:
        self.woken: list[Any] = []

    def call_soon(self, callback: Any) -> None:
        self.woken.append(callback)


def test_a_buffered_event_wakes_the_loop_only_when_no_timed_flush_is_due() -> None:
    timers = Timers()
    consumer = RestoringConsumer.__new__(RestoringConsumer)  # the parts this path reads
    consumer.hub = FakeHub()
    consumer._flush_events_promise = "flush"
    consumer.event_pacer = EventPacer(lambda: None, interval_s=0.05, clock=timers.clock)

    consumer.on_send_event_buffered()
    assert consumer.hub.woken == ["flush"]
    consumer.event_pacer.offered(lambda *_: None)  # the loop's turn: flushed at once
    timers.now = 100.01
    consumer.event_pacer.offered(lambda *_: None)  # armed for the rest of the interval
    consumer.on_send_event_buffered()
    consumer.on_send_event_buffered()
    assert consumer.hub.woken == ["flush"], "the timed flush will take them"


@pytest.mark.integration
def test_an_acknowledgement_redis_refused_is_finished_on_the_reconnect(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kombu import Connection  # noqa: PLC0415
    from kombu.transport import redis as kombu_redis  # noqa: PLC0415

    finish_acks_later(kombu_redis.QoS)  # as a worker's app does (it may have, here too)
    assert not finish_acks_later(kombu_redis.QoS)  # patched once
    client = redis_server.client()
    client.flushdb()
    with Connection(redis_server.url) as connection:
        queue = connection.SimpleQueue("llm.acks")
        queue.put({"job": "a"})
        message = queue.get(timeout=5)
        assert client.hlen("unacked") == 1
        qos = connection.default_channel.qos

        class Refused:
            def execute(self) -> None:
                raise redis.ConnectionError("Redis went away")

        monkeypatch.setattr(qos, "_remove_from_indices", lambda tag, pipe=None: Refused())
        message.ack()  # no CRITICAL "Couldn't ack": kept instead
        monkeypatch.undo()
        assert message.acknowledged
        assert len(UNFINISHED_ACKS) == 1
        assert client.hlen("unacked") == 1, "not deleted yet"

        UNFINISHED_ACKS.redo(connection)

        assert len(UNFINISHED_ACKS) == 0
        assert client.hlen("unacked") == 0
        queue.close()
    client.flushdb()
