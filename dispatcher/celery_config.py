"""The Celery settings both sides of the queue must agree on, as a plain dict.

The producer sends messages with them and the workers consume with them, so
they are built in one place; `dispatcher` itself never imports Celery.

Choices, and why:
- JSON only: messages are `[job_id, attempt, deployment, retry]`, nothing to pickle.
- Late acknowledgement, and rejection when a worker process is lost: a job whose
  worker dies mid-call is delivered again (at least once); the job store's
  compare-and-set end makes sure its result and statistics are written once.
- Visibility timeout (default 1 h): on the Redis transport an unacknowledged
  message comes back after it. It must exceed the longest vendor call plus the
  longest wait we schedule as a countdown, or a job still running would be
  delivered twice. Vendor timeouts default to 60 s and scheduled waits are
  capped at `MAX_SCHEDULED_WAIT_S` (15 min), well inside it.
- Prefetch multiplier 1: vendor calls are long and I/O-bound; a worker must not
  hoard messages that an idle worker could run.
- Task events on (and sent events), so Flower sees every task; no result
  backend: the job store in Redis is the source of truth.
"""

from __future__ import annotations

from typing import Any

from dispatcher.config import Settings

__all__ = ["MAX_SCHEDULED_WAIT_S", "celery_settings"]

# The longest countdown a retry or a cooling-down wait may use (see the module doc).
MAX_SCHEDULED_WAIT_S = 900.0


def celery_settings(settings: Settings) -> dict[str, Any]:
    """Celery configuration (lower-case setting names) for producers and workers."""
    return {
        "broker_url": settings.redis_url.get_secret_value(),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
    }
