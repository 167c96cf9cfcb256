"""`CelerySender`: messages sent through a private Celery app, for Celery's `task-sent` events.

A submit writes its message itself (`dispatcher.broker.outbox`) unless sent
events are asked for (`LLMDISPATCH_SENT_EVENTS`): only Celery's `send_task`
emits them, so the outbox then publishes through this. Celery is imported on
first use, so importing the client does not pay for it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from dispatcher.broker.celery_config import celery_priority, celery_settings
from dispatcher.broker.channel_clients import reuse_sync_clients
from dispatcher.broker.messages import RUN_JOB_TASK, RUN_JOBS_TASK, RunJob, RunJobs
from dispatcher.config.settings import Settings

if TYPE_CHECKING:
    import celery

__all__ = ["CelerySender"]


class CelerySender:
    """A lightweight Celery app, built on first use, sending by task name."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._app: celery.Celery | None = None
        self._lock = threading.Lock()

    @property
    def app(self) -> celery.Celery:
        """The Celery app messages go through (no tasks of its own; never the current app)."""
        with self._lock:  # a publish costs far more than this lock
            if self._app is None:
                import celery  # noqa: PLC0415
                from kombu.transport import redis as kombu_redis  # noqa: PLC0415

                reuse_sync_clients(kombu_redis.Channel)  # one client per channel, not per send
                app = celery.Celery("llmdispatch-producer", set_as_current=False)
                app.conf.update(celery_settings(self._settings))
                self._app = app
            return self._app

    def publish(
        self, task: str, args: list[Any], queue: str, celery_priority: int, delay_s: float
    ) -> None:
        """Send task `task` with `args` to `queue` (the outbox's `Publish`)."""
        self.app.send_task(
            task, args=args, queue=queue, priority=celery_priority, countdown=delay_s or None
        )

    def __call__(self, message: RunJob, queue: str, priority: int) -> None:
        """Send a job's message to `queue` with our `priority` (a client's `send`)."""
        self.app.send_task(
            RUN_JOB_TASK, args=message.as_args(), queue=queue, priority=celery_priority(priority)
        )

    def send_jobs(self, message: RunJobs, queue: str) -> None:
        """Send a batch message (many items) to `queue` (a batch lane)."""
        self.app.send_task(RUN_JOBS_TASK, args=message.as_args(), queue=queue)

    def close(self) -> None:
        """Release the broker connections, if the app was ever built."""
        with self._lock:
            if self._app is not None:
                self._app.close()
                self._app = None
