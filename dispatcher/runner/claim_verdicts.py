"""What a claim that did not start its job comes to: skipped, failed, moved on, or waiting.

A claim (`dispatcher.state.claims`) answers with a verdict. `ClaimVerdicts.check`
turns one that did not start the job into its outcome: a stale or ended job's
message is skipped; a job past its deadline, or a message that does not match its
route, fails; a deployment blocked by a Retry-After or behind an open circuit
hands the job to the next deployment that may be called, or to a wait for the
first to recover (`dispatcher.runner.after_failure`); a job its vendor's shared
rate limit holds back is rescheduled for when it will have capacity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from dispatcher.broker.messages import RunJob
from dispatcher.config.settings import Settings
from dispatcher.errors import DeadlineExceeded, DispatcherError, VendorRateLimited
from dispatcher.models import CircuitState, Deployment, JobEvent, JobEventKind, JobRecord
from dispatcher.runner.after_failure import AfterFailure
from dispatcher.runner.types import BUSY, Outcome, Ready
from dispatcher.state.store import Claim, JobStore

__all__ = ["ClaimVerdicts", "skip_reason"]


class ClaimVerdicts:
    """Judges claims for the `JobRunner`; the outcome of each that did not start its job."""

    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        after: AfterFailure,
        *,
        now: Callable[[], float],
        max_wait_s: float,
    ) -> None:
        self.store = store
        self.breaker = settings.circuit_breaker
        self.after = after
        self.now = now
        self.max_wait_s = max_wait_s

    def check(self, message: RunJob, claim: Claim) -> Outcome | Ready:
        """What the vendor call needs when the claim started the job; else what came of it."""
        record = claim.record
        if record is None:
            return Outcome("skipped", "no such job (expired, or never created)")
        skipped = skip_reason(record, message)
        if skipped is not None:
            return Outcome("skipped", skipped)
        if claim.verdict == "busy":
            return Outcome("skipped", BUSY)
        deployments = record.route.deployments if record.route else []
        deadline = record.deadline_at.timestamp() if record.deadline_at else None
        refused = self._refused(record, message, claim, deployments, deadline)
        if refused is not None:
            return refused
        return record, deployments, deadline

    def _refused(
        self,
        record: JobRecord,
        message: RunJob,
        claim: Claim,
        deployments: Sequence[Deployment],
        deadline: float | None,
    ) -> Outcome | None:
        """What came of a claim that did not start the job; None when it did."""
        if claim.verdict == "late":
            late = DeadlineExceeded(
                f"the job's deadline ({record.request.timeout_s:g} s after submit) passed "
                "before it could run",
                job_id=record.job_id,
            )
            return self.after.fail(record, message.vendor, late)
        if (
            message.deployment >= len(deployments)
            or deployments[message.deployment].vendor != message.vendor
        ):
            # Only a message not made by us can get here: end the job rather than strand it.
            wrong = DispatcherError(
                f"message for deployment {message.deployment} on {message.vendor!r} does not "
                f"match the job's route ({len(deployments)} deployments)",
                job_id=record.job_id,
            )
            return self.after.fail(record, message.vendor, wrong)
        if claim.verdict in ("blocked", "open"):
            cooling = self._cooling(deployments, message.deployment + 1)
            cooling[message.deployment] = claim.blocked_until or self.now()
            here = deployments[message.deployment]
            reason = (
                f"{here.vendor}'s circuit is open after repeated failures"
                if claim.verdict == "open"
                else f"{here.model} on {here.vendor} is cooling down after a rate limit"
            )
            return self.after.avoid_cooling_deployments(
                record, message, deployments, deadline, cooling, reason=reason
            )
        if claim.verdict == "limited":
            return self._wait_for_capacity(record, message, claim, deadline)
        return None

    def _wait_for_capacity(
        self, record: JobRecord, message: RunJob, claim: Claim, deadline: float | None
    ) -> Outcome:
        """Reschedule a job its vendor's shared rate limit holds back, for when it may run."""
        vendor, wait_s = message.vendor, claim.wait_s
        if not claim.reserved and deadline is not None and self.now() + wait_s >= deadline:
            error = VendorRateLimited(
                f"{vendor}'s shared rate limit has no capacity before the job's deadline "
                f"(next in {wait_s:.1f} s)",
                retry_after_s=wait_s,
                vendor=vendor,
                job_id=record.job_id,
            )
            return self.after.fail(record, vendor, error)
        delay = min(wait_s, self.max_wait_s)
        nxt = replace(message, attempt=message.attempt + 1)
        event = JobEvent(
            kind=JobEventKind.RETRY,
            attempt=nxt.attempt,
            vendor=vendor,
            reason=f"waiting {wait_s:.2f} s for {vendor}'s shared rate limit",
            delay_s=delay,
        )
        counters = [("t:limit_waits", 1.0), (f"v:{vendor}:limit_waits", 1.0)]
        return self.after.reschedule(
            record, message, nxt, vendor=vendor, delay_s=delay, event=event, counters=counters
        )

    def _cooling(self, deployments: Sequence[Deployment], first: int) -> dict[int, float]:
        """The deployments from index `first` on that may not be called now, with until when.

        A deployment may not be called while its Retry-After block stands or its
        vendor's circuit is open.
        """
        indexes = range(first, len(deployments))
        if not indexes:
            return {}
        blocked = self.store.blocks.until([deployments[i] for i in indexes])
        circuits = (
            self.store.circuits.states(
                sorted({deployments[i].vendor for i in indexes}), self.breaker.reset_timeout_s
            )
            if self.breaker.enabled
            else {}
        )
        cooling: dict[int, float] = {}
        for index in indexes:
            until = blocked.get(deployments[index], 0.0)
            view = circuits.get(deployments[index].vendor)
            if view is not None and view.state is CircuitState.OPEN:
                until = max(until, view.until)
            if until > 0.0:
                cooling[index] = until
        return cooling


def skip_reason(record: JobRecord, message: RunJob) -> str | None:
    """Why `message` must be dropped without a word to the job: it ended, or is stale."""
    if record.status.is_terminal:
        return f"already {record.status.value}"
    if message.attempt < record.attempt:
        # A redelivered old message: a newer one already owns the job.
        return f"stale: attempt {message.attempt} < {record.attempt}"
    return None
