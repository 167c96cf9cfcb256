"""What happens to a job between its message arriving and its outcome being written.

`JobRunner.run(message)` runs one attempt, the way ARCHITECTURE.md describes:

1. Claim the job, in one round trip (`JobStore.claim`): it starts only if it
   has not ended, the message is not stale (redelivery is normal, and a result
   is written once), its deadline has not passed, the message's deployment (a
   vendor and model) is not blocked by a Retry-After, its vendor's circuit is
   not open, and its shared rate limits have room (a limited vendor's job is
   read first: its buckets depend on the job).
2. A job past its deadline fails with a clear timeout instead of running.
3. A deployment that asked everyone to wait (a 429's Retry-After, shared in
   Redis: `dispatcher.state.blocks`) or whose vendor's circuit is open is not called:
   the job moves to the first deployment of its route that may be called, or,
   when none may, waits for the earliest to recover within its deadline, with
   one history entry for the whole wait. A job short of rate-limit capacity is
   charged in advance for the moment it will have it, and waits for that moment.
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

A claim that did not start its job (steps 2 and 3) is judged by
`dispatcher.runner.claim_verdicts`; what follows a failure (steps 3 and 5) is
`dispatcher.runner.after_failure`; the vendor call itself is
`dispatcher.runner.vendor_call`; the shapes they share are `dispatcher.runner.types`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace

from dispatcher.broker.celery_config import max_scheduled_wait_s
from dispatcher.broker.messages import RunJob
from dispatcher.config.schema import VendorConfig
from dispatcher.config.settings import Settings
from dispatcher.errors import (
    DispatcherError,
    JobNotFound,
    VendorUnavailable,
)
from dispatcher.models import (
    Deployment,
    JobRecord,
    JobStatus,
)
from dispatcher.models import Response as VendorResponse
from dispatcher.routing.pricing import priced_reply
from dispatcher.routing.router import queue_for
from dispatcher.runner.after_failure import AfterFailure, retry_kind
from dispatcher.runner.claim_verdicts import ClaimVerdicts, skip_reason
from dispatcher.runner.outage import REDIS_UNREACHABLE
from dispatcher.runner.types import (
    BUSY,
    AttemptWatcher,
    CallMany,
    CallVendor,
    OnText,
    Outcome,
    Ready,
    SendMessage,
    Unwatched,
    VendorCall,
)
from dispatcher.runner.vendor_call import call_vendor
from dispatcher.state.circuit import CircuitCheck
from dispatcher.state.ratelimit import RateLimiter, buckets_for
from dispatcher.state.store import Bucket, Claim, ClaimOrder, JobStore
from dispatcher.vendors.base import Vendor

__all__ = [
    "BUSY",
    "AttemptWatcher",
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
        watch: AttemptWatcher | None = None,
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
        # What comes after a failure, a refusal or a wait: the next message, or the end.
        self.after = AfterFailure(
            settings, store, send=send, now=now, rng=self.rng, max_wait_s=self.max_wait_s
        )
        # What a claim that did not start its job comes to: skip, fail, move on or wait.
        self.verdicts = ClaimVerdicts(
            store, settings, self.after, now=now, max_wait_s=self.max_wait_s
        )
        # Told of every attempt's start and end (the worker sends Flower a task per job).
        self.watch: AttemptWatcher = watch or Unwatched()

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
                deployment=message.deployment,
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
            deployment=message.deployment,
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
                    message.deployment,
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
        for index, (record, deployments, deadline) in ready:
            deployment = deployments[messages[index].deployment]
            timed = replace(messages[index], deadline=deadline)  # the call is cut there
            calls.append((self.vendors[deployment.vendor], record.request, deployment.model, timed))
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

    def _run_unnamed(self, message: RunJob) -> Outcome:
        """A message naming no vendor (an older version's) or one this worker lacks.

        The job's route says which vendor the message is for; a message for a
        vendor held elsewhere goes back to that vendor's queue.
        """
        record = self.store.peek(message.job_id)
        deployments = record.route.deployments if record.route else []
        skipped = skip_reason(record, message)
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
        """What the vendor call needs when the claim started the job; else why not (done).

        The watcher hears of the attempt's start, or of its outcome when it ends here.
        """
        checked = self.verdicts.check(message, claim)
        if isinstance(checked, Outcome):
            self.watch.ended(message, checked, None)
        else:
            _, deployments, _ = checked
            self.watch.started(message, deployments[message.deployment].model)
        return checked

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
            timed = replace(message, deadline=deadline)  # the call is cut there
            result = self.call(vendor, record.request, deployment.model, timed)
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
        outcome = self._write_result(message, ready, buckets, result)
        self.watch.ended(message, outcome, result)
        return outcome

    def _write_result(
        self,
        message: RunJob,
        ready: Ready,
        buckets: list[Bucket],
        result: VendorResponse | Exception,
    ) -> Outcome:
        """`_after_call` without telling the watcher."""
        record, deployments, deadline = ready
        vendor = self.vendors[deployments[message.deployment].vendor]
        if isinstance(result, DispatcherError):
            return self.after.after_failure(record, message, deployments, result, deadline)
        if isinstance(result, REDIS_UNREACHABLE):
            # Redis, not the vendor, failed (a stream's chunks could not be written): the
            # task runs the message again once Redis answers (`dispatcher.runner.outage`).
            raise result
        if isinstance(result, Exception):
            unexpected = VendorUnavailable(
                f"{vendor.name} client failed unexpectedly: {type(result).__name__}: {result}",
                vendor=vendor.name,
            )
            return self.after.fail(record, vendor.name, unexpected)
        response, priced = priced_reply(
            result,
            vendor.config,
            deployments[message.deployment].model,
            fallback_per_mtok=self.settings.cost_optimization.vendor_costs.get(vendor.name),
        )
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
            unpriced=not priced,
        )
        return Outcome("succeeded" if ended else "skipped", response.vendor)
