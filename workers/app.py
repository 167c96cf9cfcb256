"""The Celery application: `celery -A workers.app worker -Q llm.<vendor>`.

Configured from `Settings` (the environment and LLMDISPATCH_CONFIG) through
`dispatcher.broker.celery_config`, the same settings producers send with.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_after_setup,
    worker_init,
)

from dispatcher import Settings
from dispatcher.broker.celery_config import celery_settings
from dispatcher.log_redaction import install_log_redaction
from dispatcher.tested_versions import untested_versions
from dispatcher.vendors import unbuildable_vendors
from workers.kombu_patches.clients import reuse_redis_clients
from workers.runtime import held_vendors

__all__ = [
    "app",
    "redact_logs",
    "refuse_unbuildable_vendors",
    "switch_threads_sooner",
    "warn_of_untested_versions",
]

# The exit code of a worker whose configuration cannot work (as `llmdispatch`'s).
EXIT_CONFIG_INVALID = 3
# How long a thread may hold the GIL while another waits (Python's default: 5 ms).
# The event loop thread making vendor calls is busy whenever a batch drains; an
# interactive job's claim needs the GIL a dozen times, waiting up to this long
# each. Measured while a 10,000-item batch drained (bench/history/2026-12-01.md, batches):
# interactive queue wait p50 51 -> 17 ms and p99 279 -> 207 ms at 1 ms, and the
# batch itself a little faster; at 0.5 ms the batch lost 10 % of its rate.
GIL_SWITCH_INTERVAL_S = 0.001

logger = logging.getLogger(__name__)

reuse_redis_clients()
app = Celery("llmdispatch", set_as_current=True)
app.conf.update(celery_settings(Settings.load()))
app.conf.imports = ["workers.tasks"]
# Celery's consumer, restoring the countdown messages a lost connection drops (its doc).
app.conf.worker_consumer = "workers.kombu_patches.consumer:RestoringConsumer"


@after_setup_logger.connect  # type: ignore[untyped-decorator]
@after_setup_task_logger.connect  # type: ignore[untyped-decorator]
def redact_logs(logger: Any = None, **_: Any) -> None:
    """Mask secrets in everything the worker logs, libraries' tracebacks included."""
    install_log_redaction(logger)


@worker_init.connect  # type: ignore[untyped-decorator]
def switch_threads_sooner(**_: Any) -> None:
    """In a worker process, let a waiting thread have the GIL sooner (`GIL_SWITCH_INTERVAL_S`)."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


@celeryd_after_setup.connect  # type: ignore[untyped-decorator]
def refuse_unbuildable_vendors(**_: Any) -> None:
    """Stop a starting worker, in one line, before "ready", if a vendor cannot be built.

    A custom vendor factory that cannot be imported would otherwise fail every
    task the worker takes, and leave its jobs queued for ever.
    """
    settings = Settings.load()
    held = {
        name: settings.vendors[name] for name in held_vendors(settings) if name in settings.vendors
    }
    problems = unbuildable_vendors(held)
    if problems:
        logger.critical("cannot start: %s", "; ".join(problems))
        raise SystemExit(EXIT_CONFIG_INVALID)


@celeryd_after_setup.connect  # type: ignore[untyped-decorator]
def warn_of_untested_versions(**_: Any) -> list[str]:
    """At worker start, one WARNING line if a library we patch is outside its tested range."""
    problems = untested_versions()
    if problems:
        logger.warning("untested library versions: %s", "; ".join(problems))
    return problems
