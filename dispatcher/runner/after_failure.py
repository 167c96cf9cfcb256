"""What the runner does after a failed call: retry, move down the route, wait, or fail.

`AfterFailure`, a collaborator the `JobRunner` holds (`runner.after`), decides
and writes a job's next step once a vendor call has failed or its vendor may
not be called now:

- a retryable failure of a kind in the policy's `retry_on` is retried on the
  same deployment after the backoff or the vendor's Retry-After, whichever is
  longer, unless that would pass the job's deadline; a 429's Retry-After also
  blocks that deployment (vendor and model) for everyone (`dispatcher.state.blocks`);
- when retries run out, the job moves to its route's next deployment;
- a deployment that asked everyone to wait, or whose vendor's circuit is open,
  is skipped for the first deployment that may be called, or the job waits for
  the first to recover: one countdown to its end, one history entry however
  often the wait must be taken up again;
- anything else ends the job with its typed error.

Every next step is a new message, sent before the store hands the job to it
(see `dispatcher.runner.job_runner`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from dispatcher.broker.messages import RunJob
from dispatcher.config.policies import CircuitBreaker
from dispatcher.config.settings import Settings
from dispatcher.errors import (
    CircuitOpen,
    DeadlineExceeded,
    DispatcherError,
    VendorRateLimited,
    VendorTimeout,
    VendorUnavailable,
)
from dispatcher.models import Deployment, JobEvent, JobEventKind, JobRecord, JobStatus
from dispatcher.routing.backoff import retry_delay_s
from dispatcher.routing.router import queue_for
from dispatcher.runner.types import Outcome, SendMessage
from dispatcher.state.store import JobStore

__all__ = ["CIRCUIT_MEMORY_S", "AfterFailure", "retry_kind"]

# How long a circuit's count of failures in a row outlives its last failure: a
# vendor that failed a few times an hour ago starts afresh.
CIRCUIT_MEMORY_S = 300.0


def retry_kind(error: DispatcherError) -> str | None:
    """The retry-policy kind of an error (`retry_on` values), or None for a final one."""
    if not error.retryable:
        return None
    if isinstance(error, VendorRateLimited):
        return "rate_limited"
    if isinstance(error, VendorTimeout):
        return "timeout"
    if isinstance(error, CircuitOpen):
        return "circuit_open"
    if isinstance(error, VendorUnavailable):
        return "unavailable"
    return error.kind


class AfterFailure:
    """The decisions after a failure, and the writes of a job's next step or its end.

    The runner's collaborator: it decides, sends the next message and writes the
    job's hand-over or its end; it never calls a vendor.
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        *,
        send: SendMessage,
        now: Callable[[], float],
        rng: random.Random,
        max_wait_s: float,
    ) -> None:
        self.settings = settings
        self.store = store
        self.send = send
        self.now = now
        self.rng = rng
        self.max_wait_s = max_wait_s
        self.breaker: CircuitBreaker = settings.circuit_breaker

    def after_failure(
        self,
        record: JobRecord,
        message: RunJob,
        deployments: Sequence[Deployment],
        error: DispatcherError,
        deadline: float | None,
    ) -> Outcome:
        deployment = deployments[message.deployment]
        vendor = deployment.vendor
        error.job_id = record.job_id
        if isinstance(error, VendorRateLimited) and error.retry_after_s:
            # The deployment that was told waits, not the vendor's other models.
            self.store.blocks.block(vendor, deployment.model, error.retry_after_s)
        if (
            self.breaker.enabled
            and isinstance(error, VendorUnavailable | VendorTimeout)
            and not isinstance(error, DeadlineExceeded)  # the job's clock, not the vendor
        ):
            keep_s = int(max(CIRCUIT_MEMORY_S, 4 * self.breaker.reset_timeout_s))
            self.store.circuits.trip(vendor, self.breaker.failure_threshold, keep_s)
        policy = self.settings.retry_policy
        if not error.retryable:
            return self.fail(record, vendor, error)
        # A retryable error of a kind the policy does not retry goes straight to fallback.
        if retry_kind(error) in policy.retry_on and message.retry < policy.max_retries:
            retry_after = error.retry_after_s if isinstance(error, VendorRateLimited) else None
            delay = min(
                retry_delay_s(policy, message.retry + 1, retry_after, self.rng),
                self.max_wait_s,
            )
            if deadline is not None and self.now() + delay >= deadline:
                return self.fail(record, vendor, _deadline_error(record, error))
            nxt = replace(message, attempt=message.attempt + 1, retry=message.retry + 1)
            event = JobEvent(
                kind=JobEventKind.RETRY,
                attempt=nxt.attempt,
                vendor=vendor,
                reason=error.message,
                delay_s=delay,
            )
            counters = [("t:retries", 1.0), (f"v:{vendor}:retries", 1.0)]
            return self.reschedule(
                record, message, nxt, vendor=vendor, delay_s=delay, event=event, counters=counters
            )
        if message.deployment + 1 < len(deployments):
            return self.reroute(
                record,
                message,
                deployments,
                message.deployment + 1,
                f"retries exhausted: {error.message}",
            )
        return self.fail(record, vendor, error)

    def avoid_cooling_deployments(
        self,
        record: JobRecord,
        message: RunJob,
        deployments: Sequence[Deployment],
        deadline: float | None,
        cooling: Mapping[int, float],
        *,
        reason: str,
    ) -> Outcome:
        """Where the job goes when the message's deployment is cooling down.

        `cooling`: the route's deployments that may not be called now (by index, the
        message's among them), with until when. The job goes to the first deployment
        of the route left that is not cooling, at once; when there is none, it waits
        for the first to recover: one countdown to that moment, recorded once however
        many messages the wait takes (a block lengthened meanwhile by another 429).
        """
        remaining = range(message.deployment, len(deployments))
        free = next((i for i in remaining if i not in cooling), None)
        if free is not None:
            return self.reroute(record, message, deployments, free, reason)
        index = min(remaining, key=lambda i: cooling[i])
        target = deployments[index]
        wait_s = max(0.0, cooling[index] - self.now())
        if deadline is not None and self.now() + wait_s >= deadline:
            current = deployments[message.deployment].vendor
            error = VendorRateLimited(
                "every deployment of the route is cooling down past the job's deadline",
                retry_after_s=wait_s,
                vendor=current,
                job_id=record.job_id,
            )
            return self.fail(record, current, error)
        retry = message.retry if index == message.deployment else 0  # counts per deployment
        nxt = RunJob(
            record.job_id, message.attempt + 1, index, retry, target.vendor, record.batch_id or ""
        )
        delay = min(wait_s, self.max_wait_s)
        event = JobEvent(
            kind=JobEventKind.RETRY,
            attempt=nxt.attempt,
            vendor=target.vendor,
            reason=f"waiting {wait_s:.2f} s for {target.model} on {target.vendor} to cool down",
            delay_s=delay,
        )
        return self.reschedule(
            record,
            message,
            nxt,
            vendor=target.vendor,
            delay_s=delay,
            event=event,
            counters=[],
            waiting_for=f"deployment:{index}",
        )

    # --- writing outcomes ---------------------------------------------------------------

    def reroute(
        self,
        record: JobRecord,
        message: RunJob,
        deployments: Sequence[Deployment],
        index: int,
        reason: str,
    ) -> Outcome:
        """Move the job to deployment `index` of its route, at once, with a fresh retry count."""
        source, target = deployments[message.deployment].vendor, deployments[index].vendor
        nxt = RunJob(record.job_id, message.attempt + 1, index, 0, target, record.batch_id or "")
        event = JobEvent(
            kind=JobEventKind.REROUTED,
            attempt=nxt.attempt,
            vendor=source,
            from_vendor=source,
            to_vendor=target,
            reason=reason,
        )
        counters = [("t:fallbacks", 1.0), (f"v:{source}:fallbacks", 1.0)]
        return self.reschedule(
            record, message, nxt, vendor=target, delay_s=0.0, event=event, counters=counters
        )

    def reschedule(
        self,
        record: JobRecord,
        message: RunJob,
        nxt: RunJob,
        *,
        vendor: str,
        delay_s: float,
        event: JobEvent,
        counters: list[tuple[str, float]],
        waiting_for: str = "",
    ) -> Outcome:
        """Send the job's next message, then hand the job to it (`JobStore.reschedule`)."""
        # A batch item's retries and fallbacks stay in the batch lane, behind interactive jobs.
        nxt = replace(nxt, batch=record.batch_id or "")
        queue = queue_for(vendor, batch=bool(nxt.batch))
        # Send first: should this worker die before the store is updated, the old
        # message is redelivered, or the new one adopts the job; it is never lost.
        self.send(nxt, queue, record.request.priority, delay_s)
        self.store.reschedule(
            record.job_id,
            from_attempt=message.attempt,
            to_attempt=nxt.attempt,
            event=event,
            next_args=nxt.as_args(),
            delay_s=delay_s,
            counters=counters,
            running_on=message.vendor,
            batch_id=record.batch_id,
            waiting_for=waiting_for,
        )
        return Outcome("rescheduled", event.reason or "", nxt, delay_s, queue)

    def fail(self, record: JobRecord, vendor: str | None, error: DispatcherError) -> Outcome:
        error.job_id = record.job_id
        total_ms = max(0.0, (self.now() - record.created_at.timestamp()) * 1000.0)
        ended = self.store.finish(
            record.job_id,
            JobStatus.FAILED,
            vendor=vendor,
            error=error,
            total_ms=total_ms,
            stream=record.request.stream,
            batch_id=record.batch_id,
        )
        return Outcome("failed" if ended else "skipped", error.message, errors=[error.kind])


def _deadline_error(record: JobRecord, last: DispatcherError) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"the job's deadline ({record.request.timeout_s:g} s after submit) would pass before "
        f"the next retry; last error: {last.message}",
        vendor=last.vendor,
        status_code=last.status_code,
        job_id=record.job_id,
    )
