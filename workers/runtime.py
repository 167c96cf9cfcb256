"""Everything a worker process builds once: settings, Redis, vendors, the runner.

Built at the edge (the first task in a process), from the environment and the
configuration file, then shared by every task thread of that process.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from typing import Any

import kombu.exceptions

from dispatcher import Settings
from dispatcher.broker.messages import RunJob, RunJobs, RunQueued
from dispatcher.broker.outbox import Outbox, Publish
from dispatcher.broker.ready_queue import TakeAllowance
from dispatcher.config.settings import DEFAULT_SWEEP_INTERVAL_S
from dispatcher.runner.deliveries import Deliveries
from dispatcher.runner.health import HealthMonitor
from dispatcher.runner.job_runner import JobRunner, Outcome
from dispatcher.runner.job_tasks import JobTaskEvents
from dispatcher.runner.outage import REDIS_UNREACHABLE, OutagePolicy
from dispatcher.runner.sweeper import Sweeper, sweep_forever
from dispatcher.state.redis_connect import async_redis_client, redis_client
from dispatcher.state.store import JobStore
from dispatcher.state.store_async import AsyncStreamWriter
from dispatcher.vendors import Vendor, build_vendor
from workers.heartbeat import BEATS_PER_PERIOD, Heartbeat, restore_messages, worker_id
from workers.http_transport import vendor_http_client
from workers.kombu_patches.consumer import HELD
from workers.queued_messages import present_jobs
from workers.task_events import current_message_id, send_task_events
from workers.vendor_calls import VendorCalls

__all__ = ["WORKER_VENDORS_ENV", "WorkerRuntime", "held_vendors", "runtime"]

# httpx logs every request URL at INFO; a vendor authenticated by query
# parameter would have its key in the worker log.
logging.getLogger("httpx").setLevel(logging.WARNING)

# Which vendors this worker holds (comma-separated); `llmdispatch worker` sets it.
WORKER_VENDORS_ENV = "LLMDISPATCH_WORKER_VENDORS"
# redis-py 8 caps a pool at 100 connections; every task thread may need one.
REDIS_POOL_SIZE = 1_200
REDIS_SOCKET_TIMEOUT_S = 10.0


class WorkerRuntime:
    """The worker's shared parts, built once and connected; tasks call `deliveries`."""

    def __init__(self, settings: Settings, celery_app: Any, vendor_names: list[str]) -> None:
        self.settings = settings
        self.celery_app = celery_app
        self.redis = redis_client(
            settings,
            max_connections=REDIS_POOL_SIZE,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
            health_check_interval=30,
        )
        self.store = JobStore(self.redis, settings.key_prefix, job_ttl_s=settings.job_ttl_s)
        # Used only on the loop's thread: publishing stream chunks next to the vendor call.
        self.async_redis = async_redis_client(
            settings,
            max_connections=REDIS_POOL_SIZE,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
        )
        self.calls = VendorCalls(settings, AsyncStreamWriter(self.async_redis, settings.key_prefix))
        self.vendors: dict[str, Vendor] = {
            name: build_vendor(name, config, vendor_http_client(config))
            for name, config in settings.enabled_vendors().items()
            if name in vendor_names
        }
        # With sent events on, job and batch messages go through Celery, which emits them.
        publish = celery_publisher(celery_app) if settings.sent_events else None
        self.outbox = Outbox(self.redis, self.store.ready, publish=publish)
        self.runner = JobRunner(
            settings,
            self.store,
            self.vendors,
            call=self.calls.call_vendor,
            send=self.outbox.send_job,
            call_many=self.calls.call_many,
            # Every job a task of its own in Flower, under its job id.
            watch=JobTaskEvents(send_task_events, parent=lambda: current_message_id(celery_app)),
        )
        self.deliveries = Deliveries(
            self.store,
            self.runner,
            self.outbox,
            # How many jobs each bell may take (`LLMDISPATCH_WORKER_MAX_IN_FLIGHT`).
            allowance=TakeAllowance(settings.worker_max_in_flight),
            # Past half the visibility timeout the message would soon be delivered again anyway.
            outages=OutagePolicy(
                give_up_after_s=settings.visibility_timeout_s / 2,
                unreachable=(*REDIS_UNREACHABLE, kombu.exceptions.OperationalError),
            ),
            redis_answers=lambda: bool(self.redis.ping()),
        )
        self._health: concurrent.futures.Future[None] | None = None
        self._sweeps: threading.Thread | None = None
        self._heartbeat: Heartbeat | None = None
        self._sweeper: Sweeper | None = None

    def run_message(self, message: RunJob) -> Outcome:
        """Run one attempt of one job (`dispatcher.runner.deliveries`)."""
        return self.deliveries.run_job(message)

    def run_batch_message(self, message: RunJobs, *, redelivered: bool = False) -> list[Outcome]:
        """Run a batch message's items (`dispatcher.runner.deliveries`)."""
        return self.deliveries.run_batch(message, redelivered=redelivered)

    def run_queued_message(
        self, message: RunQueued, task_id: str, *, redelivered: bool = False
    ) -> list[tuple[str, Outcome]]:
        """Take jobs from the bell's lane and run them (`dispatcher.runner.deliveries`)."""
        return self.deliveries.run_queued(message, task_id, redelivered=redelivered)

    def start_health_checks(self) -> bool:
        """Probe this worker's vendors on a schedule, on the event loop; False when off."""
        interval = self.settings.health_check_interval_s
        if interval <= 0 or not self.vendors or self._health is not None:
            return False
        monitor = HealthMonitor(self.store, self.vendors, interval)
        self._health = self.calls.start(monitor.run_forever)
        return True

    def start_heartbeat(self, hostname: str) -> Heartbeat:
        """Beat for this process (`workers.heartbeat`), on a thread of its own; once."""
        if self._heartbeat is None:
            self._heartbeat = Heartbeat(
                self.store.workers,
                worker_id(hostname),
                HELD,
                dead_after_s=self.settings.worker_dead_after_s,
                forget_after_s=self.settings.visibility_timeout_s,
                restore=lambda tags: restore_messages(self.celery_app, tags),
                after_deaths=self._sweep_after_deaths,
            )
            threading.Thread(
                target=self._heartbeat.run, name="llmdispatch-heartbeat", daemon=True
            ).start()
        return self._heartbeat

    def _sweep_after_deaths(self) -> None:
        """One sweep pass now, for the messages dead workers took but never recorded."""
        beat_s = self.settings.worker_dead_after_s / BEATS_PER_PERIOD
        self.sweeper.sweep(grace_s=beat_s, confirm=False)

    def stop_heartbeat(self) -> None:
        """Leave the registry: this worker stops cleanly, nobody need take its messages."""
        if self._heartbeat is not None:
            self._heartbeat.stop()

    def start_sweeper(self) -> bool:
        """Look for queued jobs whose message was lost, on a schedule; False when off."""
        interval = self.settings.sweep_interval_s
        if interval <= 0 or self._sweeps is not None:
            return False
        self._sweeps = threading.Thread(
            target=sweep_forever,
            args=(self.sweeper, interval, threading.Event()),
            name="llmdispatch-sweeper",
            daemon=True,
        )
        self._sweeps.start()
        return True

    @property
    def sweeper(self) -> Sweeper:
        """This worker's sweeper (`dispatcher.runner.sweeper`), built on first use."""
        if self._sweeper is None:
            # Suspects outlive a few passes; without a schedule, a few default intervals.
            interval = self.settings.sweep_interval_s or DEFAULT_SWEEP_INTERVAL_S
            self._sweeper = Sweeper(
                self.store,
                grace_s=self.settings.sweep_grace_s,
                suspect_ttl_s=3 * interval,
                find_messages=lambda lanes, ids: present_jobs(
                    self.redis, self.store.ready, lanes, ids
                ),
                send=self.outbox.send_job,
                send_jobs=self.outbox.send_jobs,
                ring=self.outbox.ring,
            )
        return self._sweeper


def celery_publisher(celery_app: Any) -> Publish:
    """The outbox's `Publish` through `celery_app`'s `send_task` (it emits `task-sent`)."""

    def publish(task: str, args: list[Any], queue: str, priority: int, delay_s: float) -> None:
        celery_app.send_task(
            task, args=args, queue=queue, priority=priority, countdown=delay_s or None
        )

    return publish


_lock = threading.Lock()
_runtime: WorkerRuntime | None = None


def held_vendors(settings: Settings) -> list[str]:
    """The vendors this worker process serves: LLMDISPATCH_WORKER_VENDORS, else every enabled."""
    named = [n.strip() for n in os.environ.get(WORKER_VENDORS_ENV, "").split(",") if n.strip()]
    return named or list(settings.enabled_vendors())


def runtime(celery_app: Any) -> WorkerRuntime:
    """This process's runtime, built on first use."""
    global _runtime  # noqa: PLW0603 - one runtime per worker process, built lazily
    with _lock:
        if _runtime is None:
            settings = Settings.load()
            _runtime = WorkerRuntime(settings, celery_app, held_vendors(settings))
        return _runtime
