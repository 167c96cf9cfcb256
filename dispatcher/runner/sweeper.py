"""The sweeper: sends again the message of a queued job that the broker lost.

Celery's Redis transport is at-least-once for a message it has recorded as
unacknowledged, but not for the instant before: a worker takes a message off
its queue with BRPOP and records it only afterwards. Should Redis serve that
BRPOP as it shuts down, the reply dies with the connection and the message is
in no list at all; the job it names would wait, queued, for ever. Likewise a
producer that dies between writing a batch and sending its messages, or a job
and its message when Celery sends it (with sent events on).

Every queued job whose message is out is in an index (`WaitingJobs`), scored by
when that message is due. Each pass (one worker per interval) takes the jobs
overdue by more than `grace_s` and looks for their message in the lanes they
wait in and among the unacknowledged ones (`FindMessages`, which knows the
transport's format; a lane longer than it scans is left for a later pass). A
job whose message is in neither, in two passes in a row for the same attempt,
lost it:

- a job's own message (a submit's, a retry's, a fallback's) is sent again as a
  new attempt, so the lost one is stale should it turn up after all;
- a batch message's item, on its first delivery, gets the whole message sent
  again, with its place in the batch's chain, so the items after it go out
  too; a copy only ever starts items still queued.

A submitted job waiting in its lane's ready set (`dispatcher.broker.ready_queue`) is
present, and so is one a bell took while that bell is queued or unacknowledged.
A lane whose ready jobs have no bell anywhere is rung again.

A wrong verdict costs a message and a place in the queue, never a second call:
the job still runs once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from dispatcher.broker.messages import RunJob, RunJobs
from dispatcher.models import JobEvent, JobEventKind
from dispatcher.routing.router import batch_queue_for, queue_for
from dispatcher.runner.types import SendMessage
from dispatcher.state.redis_values import at as _at
from dispatcher.state.store import JobStore
from dispatcher.state.waiting_jobs import WaitingJob

__all__ = [
    "FindMessages",
    "Presence",
    "SendJobs",
    "SweepReport",
    "Sweeper",
    "lanes_of",
    "sweep_forever",
]

log = logging.getLogger(__name__)

# Overdue jobs judged per pass; the rest wait for the next one.
SWEEP_LIMIT = 1_000
# A turn lasts this share of the interval, so the next pass is never refused.
TURN_SHARE = 0.9
LOST = "its message was lost by the broker; sent again"


@dataclass(frozen=True)
class Presence:
    """The jobs named by a message in the scanned lanes or unacknowledged."""

    job_ids: frozenset[str]
    # Lanes too long to scan this pass: their jobs are not judged.
    unscanned: frozenset[str] = frozenset()
    # Lanes with jobs in their ready set but no bell anywhere -> the Celery
    # priority of the most urgent (`dispatcher.broker.ready_queue`).
    unrung: Mapping[str, int] = field(default_factory=dict)
    # Bells whose takings are recorded but which are neither queued nor unacknowledged.
    stale_takes: frozenset[str] = frozenset()


# Which messages exist for these lanes (queue names) and among the unacknowledged;
# which of these jobs wait in a lane's ready set.
FindMessages = Callable[[Iterable[str], Collection[str]], Presence]
# Sends a bell for a lane (queue name) with a Celery priority.
RingLane = Callable[[str, int], None]
# Sends a batch message to a queue.
SendJobs = Callable[[RunJobs, str], None]


@dataclass
class SweepReport:
    """What one pass found and did."""

    overdue: int = 0
    unjudged: int = 0
    suspects: int = 0
    requeued: list[str] = field(default_factory=list)
    batch_messages: int = 0
    rung: list[str] = field(default_factory=list)


def lanes_of(job: WaitingJob) -> frozenset[str]:
    """The queues the message job `job` waits for may be in: its route's vendors' lanes.

    Usually the one it was sent to, but a worker that lacks a message's vendor
    passes it on to that vendor's lane, with the job still waiting for it.
    """
    vendors = {deployment.vendor for deployment in job.route.deployments}
    if job.next_args:
        vendors.add(RunJob.from_args(*job.next_args).vendor or job.route.vendor)
    return frozenset(queue_for(vendor, batch=bool(job.batch_id)) for vendor in vendors)


class Sweeper:
    """One pass at a time (`sweep`); the worker runs it on a schedule."""

    def __init__(
        self,
        store: JobStore,
        *,
        grace_s: float,
        suspect_ttl_s: float,
        find_messages: FindMessages,
        send: SendMessage,
        send_jobs: SendJobs,
        ring: RingLane | None = None,
    ) -> None:
        self.store = store
        self.ring = ring
        self.grace_s = grace_s
        self.suspect_ttl_s = suspect_ttl_s
        self.find_messages = find_messages
        self.send = send
        self.send_jobs = send_jobs

    def sweep(self, *, grace_s: float | None = None, confirm: bool = True) -> SweepReport:
        """Judge the overdue jobs; send again the messages lost twice in a row.

        `confirm=False` (with a shorter `grace_s`) is the pass a worker makes at once when
        it has taken back a dead worker's messages: a message that dead worker had taken
        off its queue but not yet recorded can never turn up, so one look is enough.
        A live worker's message caught in that instant is sent twice at worst: its job
        still runs once.
        """
        report = SweepReport()
        waiting = self.store.waiting
        overdue = waiting.overdue(self.grace_s if grace_s is None else grace_s, SWEEP_LIMIT)
        report.overdue = len(overdue)
        jobs = waiting.read(overdue) if overdue else []
        if not jobs:
            if overdue or waiting.suspects():
                waiting.set_suspects({}, self.suspect_ttl_s)
            return report
        lanes = {job.job_id: lanes_of(job) for job in jobs}
        presence = self.find_messages(set().union(*lanes.values()), list(lanes))
        self._ring_unrung(presence, report)
        judged = [job for job in jobs if not lanes[job.job_id] & presence.unscanned]
        report.unjudged = len(jobs) - len(judged)
        missing = [job for job in judged if job.job_id not in presence.job_ids]
        before = waiting.suspects()
        if confirm:
            lost = [job for job in missing if before.get(job.job_id) == job.attempt]
        else:
            lost = missing
        lost_ids = {job.job_id for job in lost}
        suspects = {job.job_id: job.attempt for job in missing if job.job_id not in lost_ids}
        report.suspects = len(suspects)
        waiting.set_suspects(suspects, self.suspect_ttl_s)
        first_deliveries = [job for job in lost if _in_batch_message(job)]
        for job in lost:
            if not _in_batch_message(job) and self._send_job_again(job):
                report.requeued.append(job.job_id)
        sent, requeued = self._send_batch_messages_again(first_deliveries)
        report.batch_messages = sent
        report.requeued += requeued
        if report.requeued:
            log.warning(
                "sweeper: %d queued jobs had lost their message; sent again: %s",
                len(report.requeued),
                ", ".join(report.requeued[:20]),
            )
        return report

    def _ring_unrung(self, presence: Presence, report: SweepReport) -> None:
        """Ring the lanes whose ready jobs no bell will visit; forget dead bells' takings."""
        if self.ring is not None:
            for lane, priority in sorted(presence.unrung.items()):
                self.ring(lane, priority)
                report.rung.append(lane)
            if report.rung:
                log.warning(
                    "sweeper: jobs waited in lanes with no bell; rang: %s", ", ".join(report.rung)
                )
        if presence.stale_takes:
            self.store.ready.forget(presence.stale_takes)

    def _send_job_again(self, job: WaitingJob) -> bool:
        args = job.next_args or (job.job_id, job.attempt, 0, 0, job.route.vendor, job.batch_id)
        message = RunJob.from_args(*args)
        event = JobEvent(
            kind=JobEventKind.REQUEUED,
            at=_at(self.store.now()),
            attempt=job.attempt + 1,
            vendor=message.vendor or job.route.vendor,
            reason=LOST,
        )
        attempt = self.store.waiting.requeue(job.job_id, job.attempt, event, new_message=True)
        if attempt is None:
            return False
        message = replace(message, attempt=attempt)
        queue = queue_for(message.vendor or job.route.vendor, batch=bool(message.batch))
        self.send(message, queue, job.route.priority, 0.0)  # the request's, as routed
        return True

    def _send_batch_messages_again(self, jobs: Sequence[WaitingJob]) -> tuple[int, list[str]]:
        """Send again the batch messages these items' first delivery was in."""
        sent, requeued = 0, []
        by_batch: dict[str, list[WaitingJob]] = {}
        for job in jobs:
            by_batch.setdefault(job.batch_id, []).append(job)
        for batch_id, items in by_batch.items():
            vendors = {job.job_id: job.route.vendor for job in items}
            for message in self.store.batches.messages_holding(batch_id, vendors):
                ready = []
                for job_id in message.job_ids:
                    if job_id not in vendors:
                        continue  # another item of the message: the copy skips it if it ran
                    event = JobEvent(
                        kind=JobEventKind.REQUEUED,
                        at=_at(self.store.now()),
                        vendor=message.vendor,
                        reason=LOST,
                    )
                    if self.store.waiting.requeue(job_id, 0, event, new_message=False) is not None:
                        ready.append(job_id)
                if ready:
                    self.send_jobs(message, batch_queue_for(message.vendor))
                    sent += 1
                    requeued += ready
        return sent, requeued


def _in_batch_message(job: WaitingJob) -> bool:
    """A batch item waiting for its first delivery, which a batch message carries."""
    return bool(job.batch_id) and not job.next_args and job.attempt == 0


def sweep_forever(sweeper: Sweeper, interval_s: float, stop: threading.Event) -> None:
    """A pass every `interval_s`, by whichever worker takes the turn, until `stop` is set.

    A pass that fails (Redis away) is logged and the next one tries again.
    """
    while not stop.wait(interval_s):
        try:
            if sweeper.store.waiting.take_turn(interval_s * TURN_SHARE):
                sweeper.sweep()
        except Exception:
            log.warning("sweeper: a pass failed; the next one tries again", exc_info=True)
