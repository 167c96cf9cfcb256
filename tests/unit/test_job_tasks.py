"""Each job's attempts as Celery task events (what Flower lists), decided without Celery."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from dispatcher.broker.messages import RunJob
from dispatcher.config.schema import VendorConfig
from dispatcher.errors import VendorAuthError
from dispatcher.models import Request
from dispatcher.runner import job_tasks
from dispatcher.runner.job_runner import Outcome
from dispatcher.runner.job_tasks import (
    JobTaskEvents,
    TaskEvent,
    TaskEventType,
    end_events,
    message_result,
    start_events,
)
from tests.unit.test_runner import (
    OPENAI_MODEL,
    SERVER_ERROR,
    World,
    make_settings,
    reply,
    server_error,
)

JOB = "0123456789abcdef0123456789abcdef"
BELL = "bell-task-id"
PROMPT = "Tell me the launch codes"
KEY = "sk-task-events-test-0123456789"

RECEIVED, STARTED = TaskEventType.RECEIVED, TaskEventType.STARTED
SUCCEEDED, FAILED, RETRIED = TaskEventType.SUCCEEDED, TaskEventType.FAILED, TaskEventType.RETRIED


class Recorder:
    """A `send` that keeps what it was handed, and whether it asked to publish at once."""

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []
        self.urgent: list[bool] = []

    def __call__(self, events: Sequence[TaskEvent], urgent: bool) -> None:
        self.events.extend(events)
        self.urgent.append(urgent)

    def types(self, job_id: str | None = None) -> list[TaskEventType]:
        return [e.type for e in self.events if job_id is None or e.uuid == job_id]


class Ticks:
    """A monotonic clock that stands still until a test moves it."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# --- which events, with which fields ---------------------------------------------------------


def test_a_started_attempt_is_received_then_started_under_its_job_id() -> None:
    events = start_events(RunJob(JOB, attempt=2, vendor="openai", batch="b1"), "gpt-4o", BELL)

    assert [(e.type, e.uuid) for e in events] == [(RECEIVED, JOB), (STARTED, JOB)]
    assert events[0].fields == {
        "name": "job.openai",
        "args": "()",
        "kwargs": "{'vendor': 'openai', 'model': 'gpt-4o', 'attempt': 2, 'batch': 'b1'}",
        "retries": 2,
        "parent_id": BELL,
    }
    assert events[1].fields == {}


def test_a_success_names_vendor_model_and_latency_and_the_attempts_runtime() -> None:
    answer = reply("openai", "gpt-4o-2024-08-06", text=PROMPT, latency_ms=123.456)

    [event] = end_events(
        RunJob(JOB, vendor="openai"),
        Outcome("succeeded", "openai"),
        answer,
        started=True,
        runtime_s=0.25,
    )

    assert event == TaskEvent(
        SUCCEEDED,
        JOB,
        {
            "result": "{'vendor': 'openai', 'model': 'gpt-4o-2024-08-06', 'latency_ms': 123.5}",
            "runtime": 0.25,
        },
    )
    assert PROMPT not in repr(event), "never the reply's text"


def test_a_failure_is_task_failed_naming_the_error_kind_and_its_message() -> None:
    outcome = Outcome("failed", "invalid API key " + "x" * 300, errors=["auth"])

    [event] = end_events(RunJob(JOB, vendor="openai"), outcome, None, started=True)

    assert event.type is FAILED
    assert event.fields["exception"].startswith("auth: invalid API key x")
    assert len(event.fields["exception"]) == job_tasks.DETAIL_CHARS


def test_a_rescheduled_attempt_is_task_retried_naming_kind_delay_and_next_vendor() -> None:
    nxt = RunJob(JOB, attempt=1, retry=1, vendor="openai")
    outcome = Outcome("rescheduled", SERVER_ERROR, nxt, 1.5, "llm.openai")

    [event] = end_events(RunJob(JOB, vendor="openai"), outcome, server_error(), started=True)

    assert event == TaskEvent(
        RETRIED,
        JOB,
        {"exception": f"unavailable: {SERVER_ERROR} (next attempt in 1.5 s on openai)"},
    )


def test_an_attempt_that_ends_without_starting_is_received_first() -> None:
    wait = Outcome("rescheduled", "openai is cooling down", RunJob(JOB, 1, 1, 0, "anthropic"))

    events = end_events(RunJob(JOB, vendor="openai"), wait, None, started=False, parent_id=BELL)

    assert [e.type for e in events] == [RECEIVED, RETRIED]
    assert events[0].fields["name"] == "job.openai"
    assert events[0].fields["parent_id"] == BELL
    assert events[1].fields["exception"] == (
        "wait: openai is cooling down (next attempt in 0 s on anthropic)"
    )


def test_a_skipped_attempt_sends_nothing_unless_it_had_started() -> None:
    skipped = Outcome("skipped", "already cancelled")
    message = RunJob(JOB, vendor="openai")

    assert end_events(message, skipped, None, started=False) == []
    [revoked] = end_events(message, skipped, None, started=True)
    assert revoked.type is TaskEventType.REVOKED
    assert revoked.fields == {"terminated": False, "signum": None, "expired": False}


def test_a_messages_result_counts_outcomes_and_names_its_failed_jobs_first() -> None:
    ran = [
        ("a", Outcome("succeeded", "openai")),
        ("b", Outcome("failed", "invalid API key", errors=["auth"])),
        ("c", Outcome("succeeded", "openai")),
        ("d", Outcome("rescheduled", SERVER_ERROR)),
    ]

    result = message_result(ran)

    assert result == {"failed": 1, "failed_jobs": ["b"], "rescheduled": 1, "succeeded": 2}
    assert list(result)[:2] == ["failed", "failed_jobs"]
    assert message_result([("a", Outcome("succeeded", "openai"))]) == {"succeeded": 1}


def test_a_messages_result_names_at_most_ten_failed_jobs() -> None:
    ran = [(f"job{i}", Outcome("failed", "quota", errors=["quota"])) for i in range(50)]

    result = message_result(ran)

    assert result["failed"] == 50
    assert result["failed_jobs"] == [f"job{i}" for i in range(job_tasks.LISTED_FAILURES)]
    assert len(repr(result)) < 300


# --- the watcher: start times, parent, urgency -------------------------------------------------


def test_the_watcher_times_an_attempt_and_names_the_message_that_carried_it() -> None:
    sent, clock = Recorder(), Ticks()
    watcher = JobTaskEvents(sent, parent=lambda: BELL, clock=clock)
    message = RunJob(JOB, vendor="openai")

    watcher.started(message, "gpt-4o")
    clock.t += 0.75
    watcher.ended(message, Outcome("succeeded", "openai"), reply("openai", "gpt-4o"))

    assert sent.types() == [RECEIVED, STARTED, SUCCEEDED]
    assert sent.events[0].fields["parent_id"] == BELL
    assert sent.events[2].fields["runtime"] == 0.75
    assert sent.urgent == [False, False]


def test_a_retry_due_sooner_than_the_paced_flush_is_sent_at_once() -> None:
    sent = Recorder()
    watcher = JobTaskEvents(sent)
    message = RunJob(JOB, vendor="openai")
    soon = Outcome("rescheduled", "fallback", RunJob(JOB, 1, 1, 0, "anthropic"), 0.0)
    later = Outcome("rescheduled", SERVER_ERROR, RunJob(JOB, 1, 0, 1, "openai"), 2.0)

    watcher.started(message, "gpt-4o")
    watcher.ended(message, soon, server_error())
    watcher.started(message, "gpt-4o")
    watcher.ended(message, later, server_error())

    assert sent.urgent == [False, True, False, False]


def test_an_end_for_another_attempt_than_the_one_started_is_not_counted_as_started() -> None:
    sent = Recorder()
    watcher = JobTaskEvents(sent)

    watcher.started(RunJob(JOB, attempt=1, vendor="openai"), "gpt-4o")
    watcher.ended(RunJob(JOB, attempt=0, vendor="openai"), Outcome("skipped", "stale"), None)

    assert sent.types() == [RECEIVED, STARTED]


def test_the_watcher_forgets_the_oldest_starts_beyond_its_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(job_tasks, "MAX_STARTED", 2)
    sent = Recorder()
    watcher = JobTaskEvents(sent)
    for job_id in ("a", "b", "c"):
        watcher.started(RunJob(job_id, vendor="openai"), "gpt-4o")

    watcher.ended(RunJob("a", vendor="openai"), Outcome("succeeded", "openai"), None)
    watcher.ended(RunJob("c", vendor="openai"), Outcome("succeeded", "openai"), None)

    assert sent.types("a") == [RECEIVED, STARTED, RECEIVED, SUCCEEDED]
    assert sent.types("c") == [RECEIVED, STARTED, SUCCEEDED]


# --- the runner tells the watcher -------------------------------------------------------------


def watched_world(scripts: dict[str, list[Any]]) -> tuple[World, Recorder]:
    settings = make_settings()
    openai = VendorConfig(type="openai", api_key=KEY)
    world = World(
        settings.model_copy(update={"vendors": {**settings.vendors, "openai": openai}}), scripts
    )
    sent = Recorder()
    world.runner.watch = JobTaskEvents(sent, parent=lambda: BELL)
    return world, sent


def test_a_retried_job_is_received_started_retried_then_received_started_succeeded(
    make_request: Callable[..., Request],
) -> None:
    world, sent = watched_world(
        {"openai": [server_error(), reply("openai", OPENAI_MODEL)], "anthropic": []}
    )
    job_id = world.submit(
        make_request(model=OPENAI_MODEL, messages=[{"role": "user", "content": PROMPT}])
    )

    outcomes = world.run_to_end(RunJob(job_id))

    assert [o.kind for o in outcomes] == ["rescheduled", "succeeded"]
    assert sent.types(job_id) == [RECEIVED, STARTED, RETRIED, RECEIVED, STARTED, SUCCEEDED]
    retried, second = sent.events[2], sent.events[3]
    assert retried.fields["exception"].startswith(f"unavailable: {SERVER_ERROR}")
    assert second.fields["retries"] == 1
    assert "'model': 'gpt-4o'" in second.fields["kwargs"]
    assert "'vendor': 'openai'" in sent.events[-1].fields["result"]
    assert PROMPT not in repr(sent.events)
    assert KEY not in repr(sent.events)


def test_a_job_failing_for_good_is_received_started_and_failed_with_its_kind(
    make_request: Callable[..., Request],
) -> None:
    refused = VendorAuthError("invalid API key", vendor="openai", status_code=401)
    world, sent = watched_world({"openai": [refused], "anthropic": []})
    job_id = world.submit(make_request(model=OPENAI_MODEL))

    world.runner.run(RunJob(job_id))

    assert sent.types(job_id) == [RECEIVED, STARTED, FAILED]
    assert sent.events[-1].fields == {"exception": "auth: invalid API key"}


def test_run_many_sends_each_jobs_events_and_none_for_a_job_already_ended(
    make_request: Callable[..., Request],
) -> None:
    world, sent = watched_world(
        {"openai": [reply("openai", "gpt-4o-mini"), server_error()], "anthropic": []}
    )
    ok, retried, cancelled = (world.submit(make_request()) for _ in range(3))
    world.store.cancel(cancelled)

    world.runner.run_many([RunJob(j, vendor="openai") for j in (ok, retried, cancelled)])

    assert sent.types(ok) == [RECEIVED, STARTED, SUCCEEDED]
    assert sent.types(retried) == [RECEIVED, STARTED, RETRIED]
    assert sent.types(cancelled) == []
    assert {e.fields["parent_id"] for e in sent.events if e.type is RECEIVED} == {BELL}
