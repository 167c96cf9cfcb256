"""The Celery application: `celery -A workers.app worker -Q llm.<vendor>`.

Configured from `Settings` (the environment and LLMDISPATCH_CONFIG) through
`dispatcher.celery_config`, the same settings producers send with.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from dispatcher import Settings
from dispatcher.celery_config import celery_settings
from dispatcher.log_redaction import install_log_redaction
from workers.broker_clients import reuse_redis_clients

__all__ = ["app", "redact_logs"]

reuse_redis_clients()
app = Celery("llmdispatch", set_as_current=True)
app.conf.update(celery_settings(Settings.load()))
app.conf.imports = ["workers.tasks"]
# Celery's consumer, restoring the countdown messages a lost connection drops (its doc).
app.conf.worker_consumer = "workers.consumer:RestoringConsumer"


@after_setup_logger.connect  # type: ignore[untyped-decorator]
@after_setup_task_logger.connect  # type: ignore[untyped-decorator]
def redact_logs(logger: Any = None, **_: Any) -> None:
    """Mask secrets in everything the worker logs, libraries' tracebacks included."""
    install_log_redaction(logger)
