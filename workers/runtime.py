"""Everything a worker process builds once: settings, Redis, vendors, the runner.

Built at the edge (the first task in a process), from the environment and the
configuration file, then shared by every task thread of that process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import sys
import threading
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import kombu.exceptions

from dispatcher import Request, Response, Settings
from dispatcher.broker.celery_config import celery_priority
from dispatcher.broker.celery_wire import TaskMessages
from dispatcher.broker.messages import (
    RUN_JOB_TASK,
    RunJob,
    RunJobs,
    RunQueued,
)
from dispatcher.broker.ready_queue import Bell, TakeAllowance
from dispatcher.config.settings import DEFAULT_SWEEP_INTERVAL_S
from dispatcher.routing.router import vendor_of_queue
from dispatcher.runner.health import HealthMonitor
from dispatcher.runner.job_runner import JobRunner, Outcome, VendorCall, call_vendor
from dispatcher.runner.job_tasks import JobTaskEvents
from dispatcher.runner.outage import REDIS_UNREACHABLE, OutagePolicy, through_outages
from dispatcher.runner.sweeper import Sweeper, sweep_forever
from dispatcher.state.redis_connect import async_redis_client, redis_client
from dispatcher.state.store import JobStore
from dispatcher.state.store_async import AsyncStreamWriter
from dispatcher.vendors import Vendor, build_vendor
from workers.heartbeat import BEATS_PER_PERIOD, Heartbeat, restore_messages, worker_id
from workers.http_transport import vendor_http_client
from workers.kombu_patches.consumer import HELD
from workers.loop import EventLoopThread
from workers.queued_messages import present_jobs
from workers.task_events import current_message_id, send_task_events

__all__ = ["WORKER_VENDORS_ENV", "WorkerRuntime", "held_vendors", "runtime"]

# httpx logs every request URL at INFO; a vendor authenticated by query
# parameter would have its key in the worker log.
logging.getLogger("httpx").setLevel(logging.WARNING)

# Which vendors this worker holds (comma-separated); `llmdispatch worker` sets it.
WORKER_VENDORS_ENV = "LLMDISPATCH_WORKER_VENDORS"
# redis-py 8 caps a pool at 100 connections; every task thread may need one.
REDIS_POOL_SIZE = 1_200
REDIS_SOCKET_TIMEOUT_S = 10.0
# How long a thread may hold the GIL while another waits (Python's default: 5 ms).
# The event loop thread making vendor calls is busy whenever a batch drains; an
# interactive job's claim needs the GIL a dozen times, waiting up to this long
# each. Measured while a 10,000-item batch drained (bench/history/2026-12-01.md, batches):
# interactive queue wait p50 51 -> 17 ms and p99 279 -> 207 ms at 1 ms, and the
# batch itself a little faster; at 0.5 ms the batch lost 10 % of its rate.
GIL_SWITCH_INTERVAL_S = 0.001


class WorkerRuntime:
    """The worker's shared state; tasks call `run_message` and `run_batch_message`."""

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
        self.loop = EventLoopThread()
        # Used only on the loop's thread: publishing stream chunks next to the vendor call.
        self.async_redis = async_redis_client(
            settings,
            max_connections=REDIS_POOL_SIZE,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
        )
        self.stream_writer = AsyncStreamWriter(self.async_redis, settings.key_prefix)
        self.vendors: dict[str, Vendor] = {
            name: build_vendor(name, config, vendor_http_client(config))
            for name, config in settings.enabled_vendors().items()
            if name in vendor_names
        }
        self.runner = JobRunner(
            settings,
            self.store,
            self.vendors,
            call=self.call_vendor,
            send=self.send,
            call_many=self.call_many,
            # Every job a task of its own in Flower, under its job id.
            watch=JobTaskEvents(send_task_events, parent=lambda: current_message_id(celery_app)),
        )
        self._messages = TaskMessages()
        # How many jobs each bell may take (`LLMDISPATCH_WORKER_MAX_IN_FLIGHT`).
        self._allowance = TakeAllowance(settings.worker_max_in_flight)
        # The loop's tasks of `call_many`, held until done (asyncio keeps only weak ones).
        self._calls: set[asyncio.Task[Response]] = set()
        self._health: concurrent.futures.Future[None] | None = None
        self._sweeps: threading.Thread | None = None
        self._heartbeat: Heartbeat | None = None
        self._sweeper: Sweeper | None = None
        # Past half the visibility timeout the message would soon be delivered again anyway.
        self._outages = OutagePolicy(
            give_up_after_s=settings.visibility_timeout_s / 2,
            unreachable=(*REDIS_UNREACHABLE, kombu.exceptions.OperationalError),
        )

    def run_message(self, message: RunJob) -> Outcome:
        """Run one attempt of one job, riding out a Redis outage (`dispatcher.runner.outage`)."""
        return through_outages(
            lambda _again: self.runner.run(message), self._redis_answers, self._outages
        )

    def run_batch_message(self, message: RunJobs, *, redelivered: bool = False) -> list[Outcome]:
        """`_run_batch_message`, run again as a redelivered copy after a Redis outage."""
        return through_outages(
            lambda again: self._run_batch_message(message, redelivered=redelivered or again),
            self._redis_answers,
            self._outages,
        )

    def run_queued_message(
        self, message: RunQueued, task_id: str, *, redelivered: bool = False
    ) -> list[tuple[str, Outcome]]:
        """Take jobs from the bell's lane and run them (`dispatcher.broker.ready_queue`); each
        job id with its outcome.

        A Redis outage midway is ridden out as for a batch message; the bell then
        runs again what it took, as a redelivered copy.
        """
        return through_outages(
            lambda again: self._run_queued(message, task_id, redelivered=redelivered or again),
            self._redis_answers,
            self._outages,
        )

    def _run_queued(
        self, message: RunQueued, task_id: str, *, redelivered: bool
    ) -> list[tuple[str, Outcome]]:
        limit = self._allowance.limit(message.vendor)
        taken = self.store.ready.take(
            message.queue, message.priority, task_id, self.bell(message), limit
        )
        with self._allowance.holding(message.vendor, len(taken.job_ids)):
            outcomes = self.runner.run_many(
                message.messages(taken.job_ids, redelivered=redelivered)
            )
        if taken.job_ids:
            self.store.ready.release(task_id)
        return list(zip(taken.job_ids, outcomes, strict=True))

    def bell(self, message: RunQueued) -> Bell:
        """A new bell like `message` (a fresh task id), ready to push."""
        return Bell(*self._messages.run_queued(message))

    def _redis_answers(self) -> bool:
        return bool(self.redis.ping())

    def _run_batch_message(self, message: RunJobs, *, redelivered: bool) -> list[Outcome]:
        """Run a batch message's items; send the batch's next message for its vendor meanwhile.

        The next one goes out once half of this one's items have ended, so the
        vendor's calls never wait for a message's slowest item, while a batch
        still holds at most about twice its window of messages at once. It goes
        out before this one is acknowledged: should the worker die first, this
        message is delivered again (`redelivered`), runs what is left and sends it
        then. A copy that finds every item started by another copy leaves the next
        message to that copy, so copies do not multiply.
        """
        sent = False

        def send_next() -> None:
            nonlocal sent
            if not sent and message.next_message >= 0:
                sent = True
                self._send_successor(message)

        try:
            return self.runner.run_many(
                message.messages(redelivered=redelivered), half_done=send_next
            )
        except BaseException:
            send_next()  # whatever this message's fate, the rest of the batch must go on
            raise

    def _send_successor(self, message: RunJobs) -> None:
        """Send the batch's next message for the vendor, if there is one."""
        job_ids = self.store.batches.message_items(
            message.batch, message.vendor, message.next_message
        )
        if job_ids:  # with its items' index entry, in one round trip
            pipe = self.redis.pipeline(transaction=True)
            self.store.batches.enqueue(pipe, [message.successor(job_ids)], self._messages)
            pipe.execute()

    def call_vendor(
        self, vendor: Vendor, request: Request, model: str, message: RunJob
    ) -> Response:
        """Run the vendor call on the shared event loop; block this task thread until done.

        A streaming job's deltas are published from the loop as they arrive.
        """
        return self.loop.run(self._vendor_call(vendor, request, model, message))

    def call_many(self, calls: Sequence[VendorCall]) -> Iterator[tuple[int, Response | Exception]]:
        """Start every call on the event loop at once; yield each reply as it ends.

        One hand-over to the loop for all of them, instead of one per call: a batch
        message's items run concurrently without a thread each.
        """
        if not calls:
            return
        ended: queue.SimpleQueue[tuple[int, Response | Exception]] = queue.SimpleQueue()

        def start() -> None:
            for position, (vendor, request, model, message) in enumerate(calls):
                task = self.loop.loop.create_task(
                    self._vendor_call(vendor, request, model, message)
                )
                self._calls.add(task)
                task.add_done_callback(partial(self._ended, ended, position))

        self.loop.loop.call_soon_threadsafe(start)
        for _ in calls:
            yield ended.get()

    def _ended(
        self,
        ended: queue.SimpleQueue[tuple[int, Response | Exception]],
        position: int,
        task: asyncio.Task[Response],
    ) -> None:
        self._calls.discard(task)
        if task.cancelled():
            ended.put((position, RuntimeError("the vendor call was cancelled")))
            return
        error = task.exception()
        if error is None:
            ended.put((position, task.result()))
        elif isinstance(error, Exception):
            ended.put((position, error))
        else:  # KeyboardInterrupt, SystemExit: the process is going down
            ended.put((position, RuntimeError(f"the vendor call ended: {error!r}")))

    async def _vendor_call(
        self, vendor: Vendor, request: Request, model: str, message: RunJob
    ) -> Response:
        """The vendor call for a message, as a coroutine for the loop.

        A streaming job's deltas are published as they arrive, and all of them are
        in Redis before the call returns (the job's end, with its terminal stream
        event, is written after).
        """
        if not request.stream:
            return await call_vendor(vendor, request, model, deadline=message.deadline)
        writer = self.stream_writer
        job_id, attempt = message.job_id, message.attempt

        async def on_text(delta: str, emitted_at: float) -> bool:
            return writer.offer(job_id, attempt, delta, emitted_at)

        try:
            return await call_vendor(
                vendor,
                request,
                model,
                on_text,
                max_stream_s=self.settings.max_stream_s,
                deadline=message.deadline,
            )
        finally:
            await writer.drain(job_id, attempt)

    def start_health_checks(self) -> bool:
        """Probe this worker's vendors on a schedule, on the event loop; False when off."""
        interval = self.settings.health_check_interval_s
        if interval <= 0 or not self.vendors or self._health is not None:
            return False
        monitor = HealthMonitor(self.store, self.vendors, interval)
        self._health = asyncio.run_coroutine_threadsafe(monitor.run_forever(), self.loop.loop)
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
                send=self.send,
                send_jobs=self.send_jobs,
                ring=self.ring,
            )
        return self._sweeper

    def ring(self, queue: str, celery_priority: int) -> None:
        """Send a bell for lane `queue` (the sweeper's repair)."""
        message = RunQueued(queue, vendor_of_queue(queue), celery_priority)
        self.store.ready.ring(queue, celery_priority, self.bell(message))

    def send_jobs(self, message: RunJobs, queue: str) -> None:
        """Queue a batch message (the sweeper's), onto `queue`'s list."""
        self.redis.lpush(*self._messages.run_jobs(message, queue))

    def send(self, message: RunJob, queue: str, priority: int, delay_s: float) -> None:
        """Queue the next message of a job (a retry, a fallback, a wait), in its lane."""
        self.celery_app.send_task(
            RUN_JOB_TASK,
            args=message.as_args(),
            queue=queue,
            countdown=delay_s or None,
            priority=celery_priority(priority),
        )


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
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        return _runtime
