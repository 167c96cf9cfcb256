"""Jobs' task events go out through Celery's event dispatcher and read in Flower as tasks."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from celery.events import EventDispatcher
from flower.events import EventsState
from kombu import Connection
from kombu.utils.imports import symbol_by_name

from dispatcher.broker.messages import RunJob
from dispatcher.models import Response, Usage
from dispatcher.runner.job_runner import Outcome
from dispatcher.runner.job_tasks import JobTaskEvents, TaskEvent, TaskEventType
from workers.kombu_patches.consumer import EVENT_BUFFER_LIMIT, EventBuffer, RestoringConsumer
from workers.task_events import current_message_id, send_task_events

WORKER = "w1@test"
BELL = "bell-0001"


@dataclass
class Published:
    """Stands in for the dispatcher's kombu producer: keeps what would go to the broker."""

    messages: list[tuple[str, Any]] = field(default_factory=list)

    def publish(self, body: Any, routing_key: str, **_: Any) -> None:
        self.messages.append((routing_key, body))

    def events(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for _, body in self.messages:
            found.extend(body if isinstance(body, list) else [body])
        return found


@pytest.fixture
def dispatcher() -> Iterator[EventDispatcher]:
    """Celery's event dispatcher as a worker's consumer builds it, task events buffered."""
    app = Celery("task-events-test", set_as_current=False)
    with Connection("memory://") as connection:
        events = app.events.Dispatcher(connection, hostname=WORKER, buffer_group=["task"])
        events.producer = Published()
        yield events
        events.close()


@pytest.fixture
def consumer(monkeypatch: pytest.MonkeyPatch, dispatcher: EventDispatcher) -> SimpleNamespace:
    held = SimpleNamespace(event_dispatcher=dispatcher)
    monkeypatch.setattr(RestoringConsumer, "current", held)
    return held


def flower_reads(published: Published) -> EventsState:
    """Flower's state after it received what was published."""
    state = EventsState(max_tasks_in_memory=100)
    for event in published.events():
        state.event({**event, "local_received": time.time()})
    return state


def test_events_are_buffered_then_published_many_at_a_time(
    consumer: SimpleNamespace, dispatcher: EventDispatcher
) -> None:
    send_task_events(
        [
            TaskEvent(TaskEventType.RECEIVED, "j1", {"name": "job.openai"}),
            TaskEvent(TaskEventType.STARTED, "j1"),
        ],
        False,
    )
    published: Published = dispatcher.producer

    assert published.messages == [], "buffered until the consumer's paced flush"
    dispatcher.flush()
    assert [key for key, _ in published.messages] == ["task.multi"]
    assert [(e["type"], e["uuid"], e["hostname"]) for e in published.events()] == [
        ("task-received", "j1", WORKER),
        ("task-started", "j1", WORKER),
    ]


def test_an_urgent_event_is_published_at_once(
    consumer: SimpleNamespace, dispatcher: EventDispatcher
) -> None:
    send_task_events([TaskEvent(TaskEventType.RETRIED, "j1", {"exception": "x"})], True)

    assert [e["type"] for e in dispatcher.producer.events()] == ["task-retried"]


def test_flower_lists_each_job_as_a_task_with_its_true_state(
    consumer: SimpleNamespace, dispatcher: EventDispatcher
) -> None:
    watcher = JobTaskEvents(send_task_events, parent=lambda: BELL)
    answer = Response(
        content="the reply", usage=Usage(), model="gpt-4o", vendor="openai", latency_ms=42.0
    )
    ok, bad, again = (
        RunJob("ok", vendor="openai"),
        RunJob("bad", vendor="openai"),
        RunJob("again", vendor="openai"),
    )
    for message in (ok, bad, again):
        watcher.started(message, "gpt-4o")
    watcher.ended(ok, Outcome("succeeded", "openai"), answer)
    watcher.ended(bad, Outcome("failed", "invalid API key", errors=["auth"]), None)
    watcher.ended(
        again, Outcome("rescheduled", "boom", RunJob("again", 1, 0, 1, "openai"), 2.0), None
    )
    retry = RunJob("again", 1, 0, 1, "openai")
    watcher.started(retry, "gpt-4o")
    watcher.ended(retry, Outcome("succeeded", "openai"), answer)
    dispatcher.flush()

    tasks = flower_reads(dispatcher.producer).tasks
    succeeded, failed, retried = (tasks[job].as_dict() for job in ("ok", "bad", "again"))
    assert (succeeded["name"], succeeded["state"], succeeded["worker"].hostname) == (
        "job.openai",
        "SUCCESS",
        WORKER,
    )
    assert succeeded["result"] == "{'vendor': 'openai', 'model': 'gpt-4o', 'latency_ms': 42.0}"
    assert succeeded["runtime"] is not None
    assert succeeded["parent_id"] == BELL
    assert (failed["state"], failed["exception"]) == ("FAILURE", "auth: invalid API key")
    assert (retried["state"], retried["retries"]) == ("SUCCESS", 1)
    assert retried["retried"] is not None
    assert retried["retried"] <= retried["succeeded"]
    assert "the reply" not in repr(dispatcher.producer.messages)


def test_no_events_without_a_consumer_and_an_error_sending_does_not_escape(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    event = TaskEvent(TaskEventType.STARTED, "j1")
    monkeypatch.setattr(RestoringConsumer, "current", None)
    send_task_events([event], True)  # nothing to send through: nothing happens

    def refuse(*_: Any, **__: Any) -> None:
        raise ConnectionError("broker gone")

    broken = SimpleNamespace(event_dispatcher=SimpleNamespace(send=refuse))
    monkeypatch.setattr(RestoringConsumer, "current", broken)
    with caplog.at_level(logging.WARNING, logger="workers.task_events"):
        send_task_events([event], False)
    assert "could not send task events for job j1: broker gone" in caplog.text


def test_the_parent_is_the_celery_task_this_thread_runs() -> None:
    running = SimpleNamespace(current_task=SimpleNamespace(request=SimpleNamespace(id=BELL)))

    assert current_message_id(running) == BELL
    assert current_message_id(SimpleNamespace(current_task=None)) is None


def test_the_consumer_gives_each_new_event_dispatcher_the_larger_buffer_limit(
    dispatcher: EventDispatcher,
) -> None:
    steps = [symbol_by_name(step) for step in RestoringConsumer.Blueprint.default_steps]
    assert EventBuffer in steps
    assert EventBuffer.requires == ("celery.worker.consumer.events:Events",)
    assert dispatcher.buffer_limit == 24, "Celery's own"

    EventBuffer(SimpleNamespace()).start(SimpleNamespace(event_dispatcher=dispatcher))

    assert dispatcher.buffer_limit == EVENT_BUFFER_LIMIT
