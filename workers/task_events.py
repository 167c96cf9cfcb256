"""Sends the task events that show each job in Flower, through the worker's event dispatcher.

`dispatcher.runner.job_tasks` decides which events an attempt sends; this sends them the
way Celery sends its own task events in a worker: `EventDispatcher.send(type,
uuid=..., **fields)` on the consumer's dispatcher, whose "task" group is buffered
and published many events at a time (`workers.kombu_patches.consumer.EventPacer`). So they
follow the worker's settings (none when task events are off, by
`worker_send_task_events` or Flower's "disable events"), carry the worker's
hostname, clock and pid, and wait in the buffer while the broker is away.

A monitoring event must never fail a job: an error sending one is logged, and the
job goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from dispatcher.runner.job_tasks import TaskEvent
from workers.kombu_patches.consumer import RestoringConsumer

__all__ = ["current_message_id", "send_task_events"]

logger = logging.getLogger(__name__)


def send_task_events(events: Sequence[TaskEvent], urgent: bool) -> None:
    """Hand `events` to the consumer's event dispatcher; `urgent`: publish them now."""
    if not events:
        return
    consumer = RestoringConsumer.current
    dispatcher = getattr(consumer, "event_dispatcher", None)
    if dispatcher is None:  # not in a worker, or between broker connections
        return
    try:
        for event in events:
            dispatcher.send(str(event.type), uuid=event.uuid, **event.fields)
        if urgent:
            dispatcher.flush()
    except Exception as exc:  # monitoring must not fail the job
        logger.warning("could not send task events for job %s: %s", events[0].uuid, exc)


def current_message_id(celery_app: Any) -> str | None:
    """The id of the Celery task (our message) this thread is running, if any."""
    task = celery_app.current_task
    request = getattr(task, "request", None) if task is not None else None
    task_id = getattr(request, "id", None)
    return str(task_id) if task_id else None
