"""The Celery settings both sides of the queue must agree on, as a plain dict.

The producer sends messages with them and the workers consume with them, so
they are built in one place; `dispatcher` itself never imports Celery.

Choices, and why:
- JSON only: messages are `[job_id, attempt, deployment, retry]`, nothing to pickle.
- Late acknowledgement, and rejection when a worker process is lost: a job whose
  worker dies mid-call is delivered again (at least once); the job store's
  compare-and-set end makes sure its result and statistics are written once.
- Visibility timeout (default 1 h): on the Redis transport an unacknowledged
  message comes back after it, and countdown messages stay unacknowledged in
  the worker until due. It must exceed the longest vendor call (Settings
  checks every vendor's timeout against it) and the longest wait we schedule
  as a countdown: waits are capped at `max_scheduled_wait_s`, 15 min or half
  the visibility timeout, whichever is shorter. A job still waiting or running
  is therefore never delivered twice; a worker that died is redelivered after
  the timeout.
- The sweep that restores those abandoned messages runs, by kombu's defaults,
  only every `unacked_restore_interval` x `unacked_restore_throttle` = 100 s.
  We sweep every quarter of the visibility timeout (at most every 10 s, with
  no throttle), so a dead worker's job comes back soon after its timeout. A
  sweep is one small Redis query per worker.
- Prefetch multiplier 1: vendor calls are long and I/O-bound; a worker must not
  hoard messages that an idle worker could run.
- Worker task events on, so Flower sees every task from the moment a worker
  receives it; the worker publishes them in batches, at most every 50 ms
  (`workers.kombu_patches.consumer.EventPacer`). The producer's "task-sent" event is off
  unless LLMDISPATCH_SENT_EVENTS is set: it is one more publish per submit,
  and a submit then goes through Celery's `send_task` instead of writing its
  message in the job's own MULTI/EXEC (`dispatcher.broker.celery_wire`); it only shows
  tasks no worker has received yet, which the job store already shows.
- No result backend: the job store in Redis is the source of truth.
- TLS from the URL alone: for a `rediss://` REDIS_URL, `broker_use_ssl` is
  built from the URL's `ssl_*` query parameters (`ssl_cert_reqs`,
  `ssl_ca_certs`, ...), the ones redis-py's `from_url` reads too. kombu reads
  them from the URL itself, but Flower's broker view reads only
  `broker_use_ssl`; and without `ssl_cert_reqs` kombu would not verify the
  server's certificate while redis-py would, so we default it to required.
- Sentinel from the URL alone: a `redis+sentinel://` REDIS_URL becomes kombu's
  `sentinel://` URLs and its `master_name` and `sentinel_kwargs` transport
  options (`dispatcher.state.redis_connect.broker_options`), which Flower reads too.
"""

from __future__ import annotations

from typing import Any

from dispatcher.config.settings import Settings
from dispatcher.models import MAX_PRIORITY
from dispatcher.state.redis_connect import broker_options, broker_ssl_options

__all__ = [
    "MAX_SCHEDULED_WAIT_S",
    "broker_ssl_options",
    "celery_priority",
    "celery_settings",
    "max_scheduled_wait_s",
    "restore_interval_s",
]

# The longest countdown a retry or a cooling-down wait may use (see the module doc).
MAX_SCHEDULED_WAIT_S = 900.0
# kombu's own sweep interval; we never sweep less often than it would without throttling.
MAX_RESTORE_INTERVAL_S = 10


def max_scheduled_wait_s(settings: Settings) -> float:
    """The longest countdown a message may carry without being delivered twice."""
    return min(MAX_SCHEDULED_WAIT_S, settings.visibility_timeout_s / 2)


def celery_priority(priority: int) -> int:
    """Celery's priority for ours: on Redis, Celery serves 0 first; our 9 is most urgent."""
    return MAX_PRIORITY - priority


def restore_interval_s(settings: Settings) -> int:
    """How often a worker looks for messages abandoned past the visibility timeout."""
    return max(1, min(MAX_RESTORE_INTERVAL_S, settings.visibility_timeout_s // 4))


def celery_settings(settings: Settings) -> dict[str, Any]:
    """Celery configuration (lower-case setting names) for producers and workers."""
    broker = broker_options(settings)
    return {
        **broker,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            **broker.get("broker_transport_options", {}),
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": restore_interval_s(settings),
            "unacked_restore_throttle": 1,
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        "task_send_sent_event": settings.sent_events,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
    }
