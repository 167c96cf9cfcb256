"""What a worker does with each message it receives: a job's, a batch's, a lane's bell.

`Deliveries` runs them through the `JobRunner`, riding out a Redis outage
midway (`dispatcher.runner.outage`: the work then runs again as a redelivered
copy). A bell takes its jobs from the lane's ready set
(`dispatcher.broker.ready_queue`), within what this process may hold; a batch
message sends the batch's next message for its vendor once half its items have
ended.
"""

from __future__ import annotations

from collections.abc import Callable

from dispatcher.broker.messages import RunJob, RunJobs, RunQueued
from dispatcher.broker.outbox import Outbox
from dispatcher.broker.ready_queue import TakeAllowance
from dispatcher.runner.job_runner import JobRunner
from dispatcher.runner.outage import OutagePolicy, through_outages
from dispatcher.runner.types import Outcome
from dispatcher.state.store import JobStore

__all__ = ["Deliveries"]


class Deliveries:
    """Runs the three messages; thread-safe, shared by every task thread of a worker."""

    def __init__(
        self,
        store: JobStore,
        runner: JobRunner,
        outbox: Outbox,
        *,
        allowance: TakeAllowance,
        outages: OutagePolicy,
        redis_answers: Callable[[], bool],
    ) -> None:
        self.store = store
        self.runner = runner
        self.outbox = outbox
        self.allowance = allowance
        self._outages = outages
        self._redis_answers = redis_answers

    def run_job(self, message: RunJob) -> Outcome:
        """Run one attempt of one job."""
        return through_outages(
            lambda _again: self.runner.run(message), self._redis_answers, self._outages
        )

    def run_batch(self, message: RunJobs, *, redelivered: bool = False) -> list[Outcome]:
        """Run a batch message's items; their outcomes, in order."""
        return through_outages(
            lambda again: self._run_batch(message, redelivered=redelivered or again),
            self._redis_answers,
            self._outages,
        )

    def run_queued(
        self, message: RunQueued, task_id: str, *, redelivered: bool = False
    ) -> list[tuple[str, Outcome]]:
        """Take jobs from the bell's lane and run them; each job id with its outcome.

        After an outage midway the bell runs again what it took, as a redelivered copy.
        """
        return through_outages(
            lambda again: self._run_queued(message, task_id, redelivered=redelivered or again),
            self._redis_answers,
            self._outages,
        )

    def _run_queued(
        self, message: RunQueued, task_id: str, *, redelivered: bool
    ) -> list[tuple[str, Outcome]]:
        limit = self.allowance.limit(message.vendor)
        taken = self.store.ready.take(
            message.queue, message.priority, task_id, self.outbox.bell(message), limit
        )
        with self.allowance.holding(message.vendor, len(taken.job_ids)):
            outcomes = self.runner.run_many(
                message.messages(taken.job_ids, redelivered=redelivered)
            )
        if taken.job_ids:
            self.store.ready.release(task_id)
        return list(zip(taken.job_ids, outcomes, strict=True))

    def _run_batch(self, message: RunJobs, *, redelivered: bool) -> list[Outcome]:
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
            pipe = self.store.redis.pipeline(transaction=True)
            self.store.batches.enqueue(pipe, [message.successor(job_ids)], self.outbox)
            pipe.execute()
