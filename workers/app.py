"""The Celery application: `celery -A workers.app worker -Q llm.<vendor>`.

Configured from `Settings` (the environment and LLMDISPATCH_CONFIG) through
`dispatcher.celery_config`, the same settings producers send with.
"""

from __future__ import annotations

from celery import Celery

from dispatcher import Settings
from dispatcher.celery_config import celery_settings
from workers.broker_clients import reuse_redis_clients

__all__ = ["app"]

reuse_redis_clients()
app = Celery("llmdispatch", set_as_current=True)
app.conf.update(celery_settings(Settings.load()))
app.conf.imports = ["workers.tasks"]
# Celery's consumer, restoring the countdown messages a lost connection drops (its doc).
app.conf.worker_consumer = "workers.consumer:RestoringConsumer"
