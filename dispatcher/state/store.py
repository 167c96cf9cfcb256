"""The job store: jobs, their history, waiters and statistics in Redis.

Key names live in `dispatcher.state.keys` (the table of every key is there).

Transitions are atomic Lua scripts (`lua/`, loaded by `scripts.py`): a job
starts only if it has not ended and its message is not stale; it ends at most once, and the
statistics move in the same script, so they always equal the records. Ended
jobs expire after `job_ttl_s`; jobs that never end expire after a week.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import redis

from dispatcher.broker.ready_queue import ReadyQueue
from dispatcher.config.settings import DEFAULT_JOB_TTL_S
from dispatcher.errors import DispatcherError, JobNotFound
from dispatcher.models import (
    JobEvent,
    JobEventKind,
    JobRecord,
    JobStatus,
    Request,
    Response,
    Route,
    Stats,
    StreamEvent,
)
from dispatcher.state.batches import BatchStore
from dispatcher.state.blocks import DeploymentBlocks
from dispatcher.state.circuit import Circuits
from dispatcher.state.claims import Bucket, Claim, ClaimOrder, StartResult
from dispatcher.state.health_records import HealthRecords
from dispatcher.state.idempotency import IdempotencyKeys
from dispatcher.state.keys import Keys, valid_job_id
from dispatcher.state.records import (
    parse_stream_entry,
    record_from_hash,
    stream_event_body,
    terminal_stream_body,
)
from dispatcher.state.redis_values import PENDING_TTL_S, WAIT_SLICE_S, wait_for_entry
from dispatcher.state.redis_values import at as _at
from dispatcher.state.redis_values import decoded as _decoded
from dispatcher.state.redis_values import text as _text
from dispatcher.state.scripts import CLAIM, FINISH, RESCHEDULE
from dispatcher.state.stats import (
    ALL_VENDORS,
    LATENCY,
    QUEUE_WAIT,
    bucket_of,
    build_stats,
    finish_increments,
    latency_average_field,
)
from dispatcher.state.traffic import Traffic
from dispatcher.state.waiting_jobs import WaitingJobs
from dispatcher.state.worker_registry import WorkerRegistry

if TYPE_CHECKING:
    from dispatcher.state.circuit import CircuitCheck

__all__ = [
    "DEFAULT_JOB_TTL_S",
    "PENDING_TTL_S",
    "TERMINAL",
    "WAIT_SLICE_S",
    "Bucket",
    "Claim",
    "ClaimOrder",
    "JobStore",
    "Keys",
    "StartResult",
    "no_such_job",
    "parse_stream_entry",
    "record_from_hash",
    "stream_event_body",
    "valid_job_id",
]

TERMINAL = ",".join(s.value for s in JobStatus if s.is_terminal)


def no_such_job(job_id: str) -> JobNotFound:
    """The error for a job id that names no job (never created, or expired)."""
    return JobNotFound(f"no job {job_id!r}: it never existed or has expired", job_id=job_id)


class JobStore:
    """Reads and writes jobs; all methods take and return our models, never raw keys."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        *,
        job_ttl_s: int = DEFAULT_JOB_TTL_S,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self.job_ttl_s = job_ttl_s
        self.now = now
        self._claim = client.register_script(CLAIM)
        self._reschedule = client.register_script(RESCHEDULE)
        self._finish = client.register_script(FINISH)
        self.circuits = Circuits(client, self.keys, now=now)
        self.blocks = DeploymentBlocks(client, self.keys, now=now)
        self.health = HealthRecords(client, self.keys)
        self.traffic = Traffic(client, self.keys, now=now)
        self.waiting = WaitingJobs(client, self.keys, now=now)
        self.ready = ReadyQueue(client, self.keys)
        self.workers = WorkerRegistry(client, self.keys, now=now)
        self.idempotency = IdempotencyKeys(client, self.keys, ttl_s=job_ttl_s)
        self.batches = BatchStore(
            client, self.keys, idempotency=self.idempotency, waiting=self.waiting, now=now
        )

    # --- creating and reading ----------------------------------------------------------

    @staticmethod
    def new_job_id() -> str:
        """A fresh, unguessable job id."""
        return uuid.uuid4().hex

    def create(
        self,
        job_id: str,
        request: Request,
        route: Route,
        *,
        batch_id: str | None = None,
        pipeline: redis.client.Pipeline | None = None,
    ) -> None:
        """Write a new queued job (into `pipeline` when given, for one round trip)."""
        now = self.now()
        fields: dict[str, str] = {
            "request": request.model_dump_json(),
            "route": route.model_dump_json(),
            "status": JobStatus.QUEUED.value,
            "attempt": "0",
            "attempts": "0",
            "created_at": repr(now),
        }
        if request.timeout_s is not None:
            fields["deadline_at"] = repr(now + request.timeout_s)
        if batch_id is not None:
            fields["batch_id"] = batch_id
        event = JobEvent(kind=JobEventKind.QUEUED, at=_at(now), vendor=route.vendor)
        target = pipeline if pipeline is not None else self.redis.pipeline(transaction=False)
        target.hset(self.keys.job(job_id), mapping=cast("Mapping[Any, Any]", fields))
        target.rpush(self.keys.events(job_id), event.model_dump_json())
        target.expire(self.keys.job(job_id), PENDING_TTL_S)
        target.expire(self.keys.events(job_id), PENDING_TTL_S)
        if batch_id is None:  # a batch item waits for its message once that is sent
            target.zadd(self.keys.waiting(), {job_id: now})
        if pipeline is None:
            target.execute()

    def get(self, job_id: str) -> JobRecord:
        """The job's record.

        Raises:
            JobNotFound: no such job (never created, or expired), or not a job id at all.
        """
        job_key, events_key = self.keys.job(job_id), self.keys.events(job_id)  # validates the id
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(job_key)
        pipe.lrange(events_key, 0, -1)
        fields, events = pipe.execute()
        if not fields:
            raise no_such_job(job_id)
        return record_from_hash(job_id, _decoded(fields), [_text(e) for e in events])

    # --- transitions ---------------------------------------------------------------------

    def claim(
        self,
        job_id: str,
        attempt: int,
        vendor: str,
        buckets: Sequence[Bucket] = (),
        *,
        horizon_s: float = 0.0,
        circuit: CircuitCheck | None = None,
        batch_id: str = "",
        exclusive: bool = False,
        deployment: int = 0,
    ) -> Claim:
        """Start the job for message `attempt` on `vendor`, in one round trip, if it may run.

        It may when it has not ended, no newer message owns it, its deadline has not
        passed, the message's `deployment` (its index in the job's route: a vendor
        and a model) is not blocked, `vendor`'s circuit lets it through and every
        bucket in `buckets` holds its cost (then taken); otherwise nothing is written
        and the verdict says why, except that a job that would have capacity within
        `horizon_s` is charged now and told to wait ("limited", `reserved`): it holds
        that future moment, so jobs waiting for a limit queue in order instead of
        racing. The record comes back with every verdict but "missing" (without its
        history).
        `exclusive`: only a job still queued may start ("busy" otherwise): a copy of
        a message must not run a job that another copy already runs.
        """
        order = ClaimOrder(
            job_id,
            attempt,
            vendor,
            tuple(buckets),
            horizon_s,
            circuit,
            batch_id,
            exclusive,
            deployment,
        )
        return self._claimed(order, self._claim_call(order, self.redis))

    def claim_many(self, orders: Sequence[ClaimOrder]) -> list[Claim]:
        """`claim` for each order, all in one round trip (a batch message's items)."""
        pipe = self.redis.pipeline(transaction=False)
        for order in orders:
            self._claim_call(order, pipe)
        replies = pipe.execute()
        return [self._claimed(order, reply) for order, reply in zip(orders, replies, strict=True)]

    def _claim_call(self, order: ClaimOrder, client: Any) -> Any:
        """Run CLAIM for `order` on `client` (Redis: the reply; a pipeline: queued)."""
        job_id, vendor, circuit = order.job_id, order.vendor, order.circuit
        now = self.now()
        event = JobEvent(
            kind=JobEventKind.STARTED, at=_at(now), attempt=order.attempt, vendor=vendor
        )
        bucket_args: list[Any] = []
        for bucket in order.buckets:
            bucket_args += [repr(bucket.rate_per_s), repr(bucket.size), repr(bucket.cost)]
        return self._claim(
            keys=[
                self.keys.job(job_id),
                self.keys.events(job_id),
                self.keys.stats(),
                self.keys.histogram(QUEUE_WAIT),
                self.keys.blocks(vendor),
                self.keys.circuit(vendor),
                self.keys.running(vendor),
                self.keys.batch(order.batch_id) if order.batch_id else self.keys.job(job_id),
                self.keys.waiting(),
                *[bucket.key for bucket in order.buckets],
            ],
            args=[
                order.attempt,
                repr(now),
                event.model_dump_json(),
                TERMINAL,
                len(order.buckets),
                repr(max(0.0, order.horizon_s)),
                repr(circuit.reset_timeout_s) if circuit else "",
                repr(circuit.probe_timeout_s) if circuit else "0",
                "1" if order.batch_id else "0",
                "1" if order.exclusive else "0",
                order.deployment,
                *bucket_args,
            ],
            client=client,
        )

    @staticmethod
    def _claimed(order: ClaimOrder, reply: Any) -> Claim:
        verdict = cast("StartResult", _text(reply[0]))
        record = None
        if len(reply) > 1:
            flat = reply[1]
            fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
            record = record_from_hash(order.job_id, fields, [])
        if verdict == "limited":
            return Claim(verdict, record, wait_s=float(reply[2]), reserved=_text(reply[3]) == "1")
        blocked_until = float(reply[2]) if len(reply) > 2 and reply[2] is not None else None
        return Claim(verdict, record, blocked_until)

    def peek_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """`peek` for each job in one round trip; None for a job that does not exist."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self.keys.job(job_id))
        return [
            record_from_hash(job_id, _decoded(fields), []) if fields else None
            for job_id, fields in zip(job_ids, pipe.execute(), strict=True)
        ]

    def peek(self, job_id: str) -> JobRecord:
        """The job's record without its history, in one command.

        Raises:
            JobNotFound: no such job (never created, or expired), or not a job id at all.
        """
        fields = self.redis.hgetall(self.keys.job(job_id))
        if not fields:
            raise no_such_job(job_id)
        return record_from_hash(job_id, _decoded(fields), [])

    def start(self, job_id: str, attempt: int, vendor: str) -> StartResult:
        """Mark the job running for message `attempt` (see `claim`); the verdict only."""
        return self.claim(job_id, attempt, vendor).verdict

    def reschedule(
        self,
        job_id: str,
        *,
        from_attempt: int,
        to_attempt: int,
        event: JobEvent,
        next_args: Sequence[Any] = (),
        delay_s: float = 0.0,
        counters: list[tuple[str, float]] = (),  # type: ignore[assignment]
        running_on: str = "",
        batch_id: str | None = None,
        waiting_for: str = "",
    ) -> str:
        """Record a retry, reroute or wait and hand the job to message `to_attempt`.

        `next_args`: that message's arguments (`RunJob.as_args`), due in `delay_s`; the
        job waits for it in the index the sweeper reads, which sends it again if lost.
        `running_on`: the vendor the ending attempt was for; the job leaves its running set.
        `batch_id`: the job's batch, whose counts move with it.
        `waiting_for`: what the job waits for, when this is a wait for a cooling
        deployment: while it waits for the same thing (no claim started it since),
        `event` is not recorded again. One history entry per wait, however many
        messages the wait takes.
        """
        flat = [str(part) for pair in counters for part in pair]
        result = self._reschedule(
            keys=[
                self.keys.job(job_id),
                self.keys.events(job_id),
                self.keys.stats(),
                self.keys.running(running_on),
                self.keys.batch(batch_id) if batch_id else self.keys.job(job_id),
                self.keys.waiting(),
            ],
            args=[
                from_attempt,
                to_attempt,
                event.model_dump_json(),
                TERMINAL,
                "1" if batch_id else "0",
                repr(self.now() + max(0.0, delay_s)),
                json.dumps(list(next_args)),
                waiting_for,
                *flat,
            ],
        )
        return _text(result)

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        vendor: str | None,
        response: Response | None = None,
        error: DispatcherError | None = None,
        total_ms: float | None = None,
        event_reason: str | None = None,
        stream: bool = False,
        close_circuit: bool = False,
        batch_id: str | None = None,
        unpriced: bool = False,
    ) -> bool:
        """End the job, at most once; False when it had already ended (nothing written).

        A streaming job (`stream`) also gets its one terminal stream event here;
        `close_circuit` (a success) closes `vendor`'s circuit in the same step; the
        job's batch (`batch_id`) counts the end, its tokens and cost in it too;
        `unpriced` (a success whose model has no price) counts in `unpriced_calls`.
        """
        if not status.is_terminal:
            raise ValueError(f"finish needs a terminal status, not {status}")
        now = self.now()
        fields: dict[str, str] = {"finished_at": repr(now)}
        if total_ms is not None:
            fields["total_ms"] = f"{total_ms:.3f}"
        usage = response.usage if response else None
        latency = response.latency_ms if response else None
        cost = response.cost_usd if response else 0.0
        if response is not None:
            fields |= {
                "response": response.model_dump_json(),
                "usage": response.usage.model_dump_json(),
                "vendor_latency_ms": f"{response.latency_ms:.3f}",
                "cost_usd": repr(response.cost_usd),
            }
        if error is not None:
            fields["error"] = json.dumps({**error.to_dict(), "job_id": job_id})
        kind = JobEventKind(status.value)
        event = JobEvent(
            kind=kind,
            at=_at(now),
            vendor=vendor,
            reason=event_reason or (error.message if error else None),
        )
        counters = finish_increments(
            status, vendor, latency_ms=latency, usage=usage, cost_usd=cost, unpriced=unpriced
        )
        histograms: list[tuple[str, str]] = []
        if latency is not None:
            bucket = bucket_of(latency)
            histograms = [(self.keys.histogram(LATENCY), bucket)]
            if vendor:
                histograms.append((self.keys.histogram(LATENCY, vendor), bucket))
        channel = self.keys.channel(job_id) if stream else ""
        terminal = terminal_stream_body(job_id, status, response, error)
        args: list[Any] = [status.value, event.model_dump_json(), self.job_ttl_s, TERMINAL]
        closes = close_circuit and vendor is not None
        tokens = usage.total_tokens if usage is not None else 0
        args += [channel, terminal, job_id, "1" if closes else "0"]
        args += ["1" if vendor else "0", tokens]
        args += ["" if latency is None else repr(latency), latency_average_field(vendor or "")]
        args += [
            "1" if batch_id else "0",
            usage.prompt_tokens if usage is not None else 0,
            usage.completion_tokens if usage is not None else 0,
            repr(cost),
            repr(now),
        ]
        args += [len(fields), *[part for pair in fields.items() for part in pair]]
        args += [len(counters), *[str(part) for pair in counters for part in pair]]
        args += [bucket for _, bucket in histograms]
        on = vendor or ""
        keys = [
            self.keys.job(job_id),
            self.keys.events(job_id),
            self.keys.done(job_id),
            self.keys.stats(),
            self.keys.stream(job_id),
            self.keys.circuit(on),
            self.keys.running(on),
            self.keys.minute(on, int(now // 60)),
            *self._batch_keys(job_id, batch_id),
            *[key for key, _ in histograms],
        ]
        return bool(self._finish(keys=keys, args=args))

    def _batch_keys(self, job_id: str, batch_id: str | None) -> list[str]:
        """The five batch keys FINISH takes: the batch's, or untouched stand-ins."""
        if not batch_id:
            return [self.keys.job(job_id)] * 5
        return self.keys.batch_keys(batch_id)

    def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not ended; False when it already had."""
        record = self.get(job_id)  # JobNotFound for an unknown id
        return self.finish(
            job_id,
            JobStatus.CANCELLED,
            vendor=None,
            event_reason="cancelled",
            stream=record.request.stream,
            batch_id=record.batch_id,
        )

    def stream_events(self, job_id: str, after_seq: int = 0) -> list[StreamEvent]:
        """The job's buffered stream events with seq above `after_seq`, in order."""
        entries = self.redis.xrange(self.keys.stream(job_id)) or []
        events = [parse_stream_entry(fields) for _, fields in entries]
        return [event for event in events if event.seq > after_seq]

    # --- waiting ---------------------------------------------------------------------

    def wait_until_ended(self, job_id: str, timeout_s: float) -> bool:
        """Block until the job has ended (True) or `timeout_s` passed (False)."""
        return wait_for_entry(self.redis, self.keys.done(job_id), timeout_s)

    # --- statistics ----------------------------------------------------------------------

    def stats(self) -> Stats:
        """The statistics of every job that ended, per vendor and in total."""
        counters = _decoded(self.redis.hgetall(self.keys.stats()))
        vendors = sorted({f.split(":")[1] for f in counters if f.startswith("v:")})
        pipe = self.redis.pipeline(transaction=False)
        for vendor in [ALL_VENDORS, *vendors]:
            pipe.hgetall(self.keys.histogram(LATENCY, vendor))
        pipe.hgetall(self.keys.histogram(QUEUE_WAIT))
        *latencies, queue_wait = pipe.execute()
        names = [ALL_VENDORS, *vendors]
        latency = {vendor: _decoded(h) for vendor, h in zip(names, latencies, strict=True)}
        return build_stats(counters, latency, _decoded(queue_wait))
