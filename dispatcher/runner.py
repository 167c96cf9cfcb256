"""What happens to a job between its message arriving and its outcome being written.

`JobRunner.run(message)` runs one attempt, the way ARCHITECTURE.md describes:

1. Claim the job, in one round trip (`JobStore.claim`): it starts only if it
   has not ended, the message is not stale (redelivery is normal, and a result
   is written once), its deadline has not passed, the message's vendor is not
   cooling down, its circuit is not open, and its shared rate limits have room
   (a limited vendor's job is read first: its buckets depend on the job).
2. A job past its deadline fails with a clear timeout instead of running.
3. A vendor that asked everyone to wait (Retry-After, shared in Redis) or whose
   circuit is open is not called: the job moves to the first deployment of its
   route that may be called, or, when none may, waits for the earliest to
   recover within its deadline. A job short of rate-limit capacity is charged
   in advance for the moment it will have it, and waits for that moment.
4. Call the vendor. Success: response, usage, cost, timings and statistics are
   written in one atomic step, and waiters wake.
5. A retryable failure of a kind in the policy's `retry_on` is retried on the
   same deployment after the policy's backoff or the vendor's Retry-After,
   whichever is longer; when retries run out (at once for kinds not in
   `retry_on`) the job moves to the route's next deployment (fallback vendor,
   or the model group's next vendor+model). A final failure (authentication,
   invalid request...), or a wait that would pass the deadline, ends the job.

Waits are new messages with a countdown, never a sleep that holds a worker
slot. The next message is sent *before* the job's state is handed to it: if
the worker dies between the two, the old message is redelivered (late
acknowledgement) or the new one adopts the job, so a job is never stranded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from dispatcher.backoff import retry_delay_s
from dispatcher.celery_config import max_scheduled_wait_s
from dispatcher.circuit import CircuitCheck
from dispatcher.config import Settings
from dispatcher.config_schema import VendorConfig
from dispatcher.errors import (
    CircuitOpen,
    DispatcherError,
    JobCancelled,
    JobNotFound,
    VendorRateLimited,
    VendorTimeout,
    VendorUnavailable,
)
from dispatcher.messages import RunJob
from dispatcher.models import (
    CircuitState,
    Deployment,
    FinishReason,
    JobEvent,
    JobEventKind,
    JobRecord,
    JobStatus,
    Request,
    Usage,
)
from dispatcher.models import Response as VendorResponse
from dispatcher.outage import REDIS_UNREACHABLE
from dispatcher.ratelimit import RateLimiter, buckets_for, vendor_buckets
from dispatcher.router import queue_for
from dispatcher.store import Bucket, Claim, ClaimOrder, JobStore
from dispatcher.vendors.base import Vendor

__all__ = [
    "BUSY",
    "CallMany",
    "CallVendor",
    "JobRunner",
    "OnText",
    "Outcome",
    "SendMessage",
    "VendorCall",
    "call_vendor",
    "retry_kind",
]

# Why a batch item was left alone: another copy of its message runs it.
BUSY = "already started by another copy of its message"
# How long a circuit's count of failures in a row outlives its last failure: a
# vendor that failed a few times an hour ago starts afresh.
CIRCUIT_MEMORY_S = 300.0

# Sends a message to a queue: (message, queue, priority, countdown in seconds).
SendMessage = Callable[[RunJob, str, int, float], None]
# Makes the vendor call for a message and returns its reply (the worker runs it on its
# event loop and, for a streaming job, publishes every delta as it arrives).
CallVendor = Callable[[Vendor, Request, str, RunJob], VendorResponse]
# Publishes a delta of a streaming job: (text, epoch seconds it arrived) -> still wanted?
OnText = Callable[[str, float], Awaitable[bool]]
# One vendor call of `call_many`: what `CallVendor` takes.
VendorCall = tuple[Vendor, Request, str, RunJob]
# Makes many vendor calls concurrently; yields (position in the list, reply or the
# exception the call raised) as each one ends.
CallMany = Callable[[Sequence[VendorCall]], Iterable[tuple[int, "VendorResponse | Exception"]]]
# A claimed job, ready for its vendor call: its record, route and deadline.
Ready = tuple[JobRecord, Sequence[Deployment], float | None]


@dataclass(frozen=True)
class Outcome:
    """What an attempt led to; the worker logs it, tests assert on it."""

    kind: Literal["succeeded", "failed", "rescheduled", "skipped"]
    detail: str = ""
    next_message: RunJob | None = None
    delay_s: float = 0.0
    queue: str | None = None
    errors: list[str] = field(default_factory=list)


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


class JobRunner:
    """Runs attempts of jobs for the vendors this worker holds."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        vendors: Mapping[str, Vendor],
        *,
        call: CallVendor,
        send: SendMessage,
        call_many: CallMany | None = None,
        now: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.vendors = vendors
        self.call = call
        self.call_many: CallMany = call_many or self._call_one_by_one
        self.send = send
        self.now = now
        self.rng = rng or random.Random()
        self.max_wait_s = max_scheduled_wait_s(settings)
        self.limiter = RateLimiter(store.redis, now=now)
        self.breaker = settings.circuit_breaker

    def run(self, message: RunJob) -> Outcome:
        """Run one attempt of a job, as the message says."""
        try:
            if message.vendor in self.vendors:
                return self._claim(message)
            return self._run_unnamed(message)
        except JobNotFound:
            return Outcome("skipped", "no such job (expired, or never created)")

    def _claim(self, message: RunJob, record: JobRecord | None = None) -> Outcome:
        """Claim the job for the message's vendor, with that vendor's rate limits if any.

        Limits depend on the job (its model, tenant and tokens), so a limited vendor's
        job is read first: two round trips instead of one.
        """
        config = self.vendors[message.vendor].config
        circuit = self._circuit_check(config)
        if not config.is_limited:
            claim = self.store.claim(
                message.job_id,
                message.attempt,
                message.vendor,
                circuit=circuit,
                batch_id=message.batch,
                exclusive=message.exclusive,
            )
            return self._after_claim(message, claim, [])
        record = record or self.store.peek(message.job_id)
        buckets, horizon = self._limits_for(message, record, config)
        claim = self.store.claim(
            message.job_id,
            message.attempt,
            message.vendor,
            buckets,
            horizon_s=horizon,
            circuit=circuit,
            batch_id=message.batch,
            exclusive=message.exclusive,
        )
        return self._after_claim(message, claim, buckets)

    def _limits_for(
        self, message: RunJob, record: JobRecord, config: VendorConfig
    ) -> tuple[list[Bucket], float]:
        """The buckets the job takes from on the message's vendor, and how far ahead it may book."""
        deployments = record.route.deployments if record.route else []
        model = (
            deployments[message.deployment].model
            if message.deployment < len(deployments)
            else record.request.model
        )
        buckets = buckets_for(self.store.keys, message.vendor, config, model, record.request)
        horizon = self.max_wait_s
        if record.deadline_at is not None:
            horizon = min(horizon, record.deadline_at.timestamp() - self.now())
        return buckets, horizon

    def run_many(
        self, messages: Sequence[RunJob], *, half_done: Callable[[], None] | None = None
    ) -> list[Outcome]:
        """Run several messages for one vendor together; their outcomes, in order.

        The claims go in one round trip (a limited vendor's jobs are read first, in
        one more), the vendor calls run concurrently (`call_many`), and each call's
        outcome is written as soon as it ends. Each message is otherwise run exactly
        as `run` would run it. Messages for a vendor this worker lacks, or for more
        than one vendor, are run one by one. `half_done` is called once, as soon as
        half of the messages have their outcome, unless every one of them was left
        to another copy of its message (`BUSY`).
        """
        half_done = half_done or (lambda: None)
        if not messages:
            half_done()
            return []
        vendor = messages[0].vendor
        if vendor not in self.vendors or any(m.vendor != vendor for m in messages):
            half_done()
            return [self.run(message) for message in messages]
        config = self.vendors[vendor].config
        circuit = self._circuit_check(config)
        buckets: list[list[Bucket]] = [[] for _ in messages]
        orders = []
        records = (
            self.store.peek_many([m.job_id for m in messages])
            if config.is_limited
            else [None] * len(messages)
        )
        for index, (message, record) in enumerate(zip(messages, records, strict=True)):
            horizon = 0.0
            if record is not None:
                buckets[index], horizon = self._limits_for(message, record, config)
            orders.append(
                ClaimOrder(
                    message.job_id,
                    message.attempt,
                    vendor,
                    tuple(buckets[index]),
                    horizon,
                    circuit,
                    message.batch,
                    message.exclusive,
                )
            )
        outcomes: list[Outcome | None] = [None] * len(messages)
        ready: list[tuple[int, Ready]] = []
        for index, (message, claim) in enumerate(
            zip(messages, self.store.claim_many(orders), strict=True)
        ):
            checked = self._ready(message, claim)
            if isinstance(checked, Outcome):
                outcomes[index] = checked
            else:
                ready.append((index, checked))
        if not ready and all(o is not None and o.detail == BUSY for o in outcomes):
            return [o for o in outcomes if o is not None]  # all copies: half_done is not ours
        half = (len(messages) + 1) // 2
        ended = len(messages) - len(ready)
        if ended >= half:
            half_done()
        calls = []
        for index, (record, deployments, _) in ready:
            deployment = deployments[messages[index].deployment]
            calls.append(
                (self.vendors[deployment.vendor], record.request, deployment.model, messages[index])
            )
        for position, result in self.call_many(calls):
            index, claimed = ready[position]
            outcomes[index] = self._after_call(messages[index], claimed, buckets[index], result)
            ended += 1
            if ended == half:
                half_done()
        return [outcome or Outcome("skipped", "no outcome") for outcome in outcomes]

    def _call_one_by_one(
        self, calls: Sequence[VendorCall]
    ) -> Iterator[tuple[int, VendorResponse | Exception]]:
        """The default `call_many`: each call in turn, through `call`."""
        for position, (vendor, request, model, message) in enumerate(calls):
            try:
                yield position, self.call(vendor, request, model, message)
            except Exception as exc:  # handed to _after_call, as a call's failure
                yield position, exc

    def _circuit_check(self, config: VendorConfig) -> CircuitCheck | None:
        """What the claim needs to honour circuits, or None when breakers are off."""
        if not self.breaker.enabled:
            return None
        return CircuitCheck(self.breaker.reset_timeout_s, config.timeout)

    def _cooling(self, vendors: list[str]) -> dict[str, float]:
        """Vendors that may not be called now (Retry-After, open circuit), with until when."""
        blocked = self.store.blocked_until(vendors)
        if self.breaker.enabled:
            for vendor, view in self.store.circuits.states(
                vendors, self.breaker.reset_timeout_s
            ).items():
                if view.state is CircuitState.OPEN:
                    blocked[vendor] = max(blocked.get(vendor, 0.0), view.until)
        return blocked

    def _run_unnamed(self, message: RunJob) -> Outcome:
        """A message naming no vendor (an older version's) or one this worker lacks.

        The job's route says which vendor the message is for; a message for a
        vendor held elsewhere goes back to that vendor's queue.
        """
        record = self.store.peek(message.job_id)
        deployments = record.route.deployments if record.route else []
        skipped = _skip_reason(record, message)
        if skipped is None and message.deployment >= len(deployments):
            skipped = f"the route has no deployment {message.deployment}"
        if skipped is not None:
            return Outcome("skipped", skipped)
        named = replace(
            message,
            vendor=deployments[message.deployment].vendor,
            batch=message.batch or record.batch_id or "",
        )
        if named.vendor in self.vendors:
            return self._claim(named, record)
        # Queues are per vendor, so this worker should never get this message:
        # put it back where a worker holding that vendor will take it.
        queue = queue_for(named.vendor, batch=bool(named.batch))
        self.send(named, queue, record.request.priority, 0.0)
        return Outcome("rescheduled", f"no vendor {named.vendor!r} in this worker")

    def _after_claim(self, message: RunJob, claim: Claim, buckets: list[Bucket]) -> Outcome:
        """Call the vendor when the claim started the job; otherwise say or do why not."""
        checked = self._ready(message, claim)
        if isinstance(checked, Outcome):
            return checked
        record, deployments, deadline = checked
        return self._attempt(record, message, deployments, deadline, buckets)

    def _ready(self, message: RunJob, claim: Claim) -> Outcome | Ready:
        """What the vendor call needs when the claim started the job; else why not (done)."""
        record = claim.record
        if record is None:
            return Outcome("skipped", "no such job (expired, or never created)")
        skipped = _skip_reason(record, message)
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
            late = VendorTimeout(
                f"the job's deadline ({record.request.timeout_s:g} s after submit) passed "
                "before it could run",
                job_id=record.job_id,
            )
            return self._fail(record, message.vendor, late)
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
            return self._fail(record, message.vendor, wrong)
        if claim.verdict in ("blocked", "open"):
            blocked = self._cooling([d.vendor for d in deployments[message.deployment + 1 :]])
            blocked[message.vendor] = claim.blocked_until or self.now()
            reason = (
                f"{message.vendor}'s circuit is open after repeated failures"
                if claim.verdict == "open"
                else f"{message.vendor} is cooling down after a rate limit"
            )
            return self._avoid_cooling_vendors(
                record, message, deployments, deadline, blocked, reason=reason
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
            return self._fail(record, vendor, error)
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
        return self._reschedule(
            record, message, nxt, vendor=vendor, delay_s=delay, event=event, counters=counters
        )

    def _attempt(
        self,
        record: JobRecord,
        message: RunJob,
        deployments: Sequence[Deployment],
        deadline: float | None,
        buckets: list[Bucket],
    ) -> Outcome:
        """Call the vendor (the job is running for this message) and write what came of it."""
        deployment = deployments[message.deployment]
        vendor = self.vendors[deployment.vendor]
        result: VendorResponse | Exception
        try:
            result = self.call(vendor, record.request, deployment.model, message)
        except Exception as exc:  # a vendor bug must end the job, not the worker
            result = exc
        return self._after_call(message, (record, deployments, deadline), buckets, result)

    def _after_call(
        self,
        message: RunJob,
        ready: Ready,
        buckets: list[Bucket],
        result: VendorResponse | Exception,
    ) -> Outcome:
        """Write what the vendor call came to: the job's end, or its retry or fallback."""
        record, deployments, deadline = ready
        vendor = self.vendors[deployments[message.deployment].vendor]
        if isinstance(result, DispatcherError):
            return self._after_failure(record, message, deployments, result, deadline)
        if isinstance(result, REDIS_UNREACHABLE):
            # Redis, not the vendor, failed (a stream's chunks could not be written): the
            # task runs the message again once Redis answers (`dispatcher.outage`).
            raise result
        if isinstance(result, Exception):
            unexpected = VendorUnavailable(
                f"{vendor.name} client failed unexpectedly: {type(result).__name__}: {result}",
                vendor=vendor.name,
            )
            return self._fail(record, vendor.name, unexpected)
        response = result
        if buckets:
            self.limiter.settle(buckets, response.usage.total_tokens)
        total_ms = (self.now() - record.created_at.timestamp()) * 1000.0
        ended = self.store.finish(
            record.job_id,
            JobStatus.SUCCEEDED,
            vendor=vendor.name,
            response=response,
            total_ms=max(0.0, total_ms),
            stream=record.request.stream,
            close_circuit=self.breaker.enabled,
            batch_id=record.batch_id,
        )
        return Outcome("succeeded" if ended else "skipped", response.vendor)

    # --- decisions after a failure ---------------------------------------------------

    def _after_failure(
        self,
        record: JobRecord,
        message: RunJob,
        deployments: Sequence[Deployment],
        error: DispatcherError,
        deadline: float | None,
    ) -> Outcome:
        vendor = deployments[message.deployment].vendor
        error.job_id = record.job_id
        if isinstance(error, VendorRateLimited) and error.retry_after_s:
            self.store.block_vendor(vendor, error.retry_after_s)
            if vendor in self.vendors:
                limit = vendor_buckets(self.store.keys, vendor, self.vendors[vendor].config)
                self.limiter.drain(limit, error.retry_after_s)
        if self.breaker.enabled and isinstance(error, VendorUnavailable | VendorTimeout):
            keep_s = int(max(CIRCUIT_MEMORY_S, 4 * self.breaker.reset_timeout_s))
            self.store.circuits.trip(vendor, self.breaker.failure_threshold, keep_s)
        policy = self.settings.retry_policy
        if not error.retryable:
            return self._fail(record, vendor, error)
        # A retryable error of a kind the policy does not retry goes straight to fallback.
        if retry_kind(error) in policy.retry_on and message.retry < policy.max_retries:
            retry_after = error.retry_after_s if isinstance(error, VendorRateLimited) else None
            delay = min(
                retry_delay_s(policy, message.retry + 1, retry_after, self.rng),
                self.max_wait_s,
            )
            if deadline is not None and self.now() + delay >= deadline:
                return self._fail(record, vendor, _deadline_error(record, error))
            nxt = replace(message, attempt=message.attempt + 1, retry=message.retry + 1)
            event = JobEvent(
                kind=JobEventKind.RETRY,
                attempt=nxt.attempt,
                vendor=vendor,
                reason=error.message,
                delay_s=delay,
            )
            counters = [("t:retries", 1.0), (f"v:{vendor}:retries", 1.0)]
            return self._reschedule(
                record, message, nxt, vendor=vendor, delay_s=delay, event=event, counters=counters
            )
        if message.deployment + 1 < len(deployments):
            return self._reroute(
                record,
                message,
                deployments,
                message.deployment + 1,
                f"retries exhausted: {error.message}",
            )
        return self._fail(record, vendor, error)

    def _avoid_cooling_vendors(
        self,
        record: JobRecord,
        message: RunJob,
        deployments: Sequence[Deployment],
        deadline: float | None,
        blocked: Mapping[str, float],
        *,
        reason: str,
    ) -> Outcome:
        """Where the job goes when the message's vendor is cooling down (in `blocked`).

        To the first deployment of the route left whose vendor is not in `blocked`;
        when there is none, to the first to recover, after its wait.
        """
        remaining = list(range(message.deployment, len(deployments)))
        current = deployments[message.deployment].vendor
        free = next((i for i in remaining if deployments[i].vendor not in blocked), None)
        if free is not None:
            return self._reroute(record, message, deployments, free, reason)
        # Every remaining deployment is cooling down: wait for the first to recover.
        index = min(remaining, key=lambda i: blocked[deployments[i].vendor])
        wait_s = max(0.0, blocked[deployments[index].vendor] - self.now())
        if deadline is not None and self.now() + wait_s >= deadline:
            error = VendorRateLimited(
                "every vendor of the route is cooling down past the job's deadline",
                retry_after_s=wait_s,
                vendor=current,
                job_id=record.job_id,
            )
            return self._fail(record, current, error)
        retry = message.retry if index == message.deployment else 0  # counts per deployment
        nxt = RunJob(
            record.job_id,
            message.attempt + 1,
            index,
            retry,
            deployments[index].vendor,
            record.batch_id or "",
        )
        event = JobEvent(
            kind=JobEventKind.RETRY,
            attempt=nxt.attempt,
            vendor=deployments[index].vendor,
            reason="every vendor of the route is cooling down; waiting for the first",
            delay_s=min(wait_s, self.max_wait_s),
        )
        vendor = deployments[index].vendor
        return self._reschedule(
            record,
            message,
            nxt,
            vendor=vendor,
            delay_s=event.delay_s or 0.0,
            event=event,
            counters=[],
        )

    # --- writing outcomes ---------------------------------------------------------------

    def _reroute(
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
        return self._reschedule(
            record, message, nxt, vendor=target, delay_s=0.0, event=event, counters=counters
        )

    def _reschedule(
        self,
        record: JobRecord,
        message: RunJob,
        nxt: RunJob,
        *,
        vendor: str,
        delay_s: float,
        event: JobEvent,
        counters: list[tuple[str, float]],
    ) -> Outcome:
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
            counters=counters,
            running_on=message.vendor,
            batch_id=record.batch_id,
        )
        return Outcome("rescheduled", event.reason or "", nxt, delay_s, queue)

    def _fail(self, record: JobRecord, vendor: str | None, error: DispatcherError) -> Outcome:
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


def _skip_reason(record: JobRecord, message: RunJob) -> str | None:
    """Why `message` must be dropped without a word to the job: it ended, or is stale."""
    if record.status.is_terminal:
        return f"already {record.status.value}"
    if message.attempt < record.attempt:
        # A redelivered old message: a newer one already owns the job.
        return f"stale: attempt {message.attempt} < {record.attempt}"
    return None


def _deadline_error(record: JobRecord, last: DispatcherError) -> VendorTimeout:
    return VendorTimeout(
        f"the job's deadline ({record.request.timeout_s:g} s after submit) would pass before "
        f"the next retry; last error: {last.message}",
        vendor=last.vendor,
        status_code=last.status_code,
        job_id=record.job_id,
    )


async def call_vendor(
    vendor: Vendor, request: Request, model: str, on_text: OnText | None = None
) -> VendorResponse:
    """The vendor's reply: `complete`, or for a streamed request the collected stream.

    `on_text` is awaited with every delta as it arrives; when it answers False
    (the job was cancelled, or a newer attempt owns it) the stream is dropped.
    """
    if not request.stream:
        return await vendor.complete(request, model)
    started = time.perf_counter()
    parts: list[str] = []
    final = None
    stream = vendor.stream(request, model)
    try:
        async for delta in stream:
            parts.append(delta.text)
            if delta.text and on_text is not None and not await on_text(delta.text, time.time()):
                raise JobCancelled("the job was cancelled or taken over while streaming")
            if delta.finish_reason is not None:
                final = delta
    finally:
        # Closing a dropped stream closes its HTTP connection now, not at garbage collection.
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()
    if final is None:  # a vendor must end its stream with a final delta
        raise VendorUnavailable(f"{vendor.name} ended its stream without a final delta")
    usage = final.usage or Usage()
    return VendorResponse(
        content="".join(parts),
        usage=usage,
        model=final.model or model,
        vendor=vendor.name,
        finish_reason=final.finish_reason or FinishReason.STOP,
        latency_ms=(time.perf_counter() - started) * 1000.0,
        cost_usd=vendor.cost_of(usage, model),
        vendor_finish_reason=final.vendor_finish_reason,
    )
