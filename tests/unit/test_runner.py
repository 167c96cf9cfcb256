"""The job runner: one attempt per message, retries, fallback, deadlines, cooling deployments.

Every test builds the world a worker sees: a job store on fakeredis, a fake
clock shared by the store and the runner (tests advance it, never sleep), a
seeded rng, a `send` that records what would go to Celery, and scripted vendors
that return or raise what the test tells them to. Jobs are created the way the
producer creates them: `route(request, settings)`, then `store.create`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest
import redis

from dispatcher.broker.messages import RunJob
from dispatcher.config.policies import (
    BackoffStrategy,
    CircuitBreaker,
    CostOptimization,
    RetryPolicy,
)
from dispatcher.config.schema import RateLimit, VendorConfig
from dispatcher.config.settings import Settings
from dispatcher.errors import (
    BudgetExceeded,
    CircuitOpen,
    ContentFiltered,
    DeadlineExceeded,
    DispatcherError,
    InvalidRequest,
    JobNotFound,
    NoRoute,
    StreamBroken,
    VendorAuthError,
    VendorQuotaExceeded,
    VendorRateLimited,
    VendorTimeout,
    VendorUnavailable,
)
from dispatcher.models import (
    CircuitState,
    Deployment,
    FinishReason,
    HealthStatus,
    JobEventKind,
    JobRecord,
    JobStatus,
    Request,
    Response,
    Usage,
)
from dispatcher.routing.pricing import Price
from dispatcher.routing.router import route
from dispatcher.runner.job_runner import BUSY, JobRunner, Outcome, call_vendor, retry_kind
from dispatcher.state.circuit import CircuitCheck, CircuitView
from dispatcher.state.store import Bucket, JobStore
from dispatcher.vendors.base import Health, StreamDelta, Vendor
from dispatcher.vendors.mock import MockVendor

# An arbitrary, exactly representable epoch; the clock only moves when a test moves it.
START_S = 1_700_000_000.0
PREFIX = "test"
# The group the producer would name; each member knows the model by its own name.
GROUP = "smart"
OPENAI_MODEL = "gpt-4o"
ANTHROPIC_MODEL = "claude-3-5-sonnet-latest"
SERVER_ERROR = "server exploded; retry"
GPT_4O = Deployment(vendor="openai", model=OPENAI_MODEL)
CLAUDE = Deployment(vendor="anthropic", model=ANTHROPIC_MODEL)


class Clock:
    """A clock that stands still until a test advances it."""

    def __init__(self, start_s: float = START_S) -> None:
        self.t = start_s

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


# A scripted step: a reply, an exception to raise, or a function run at call time.
Step = Response | BaseException | Callable[[Request, str | None], Response]


class ScriptedVendor(Vendor):
    """A vendor whose `complete` plays back a script, recording the model of each call."""

    def __init__(self, name: str, config: VendorConfig, script: Iterable[Step] = ()) -> None:
        super().__init__(name, config)
        self.script: list[Step] = list(script)
        self.calls: list[str | None] = []

    async def complete(self, request: Request, model: str | None = None) -> Response:
        self.calls.append(model)
        if not self.script:
            raise LookupError(f"{self.name} was called more often than its script allows")
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, Response):
            return step
        return step(request, model)

    def stream(self, request: Request, model: str | None = None) -> AsyncIterator[StreamDelta]:
        raise NotImplementedError("the runner tests script complete() only")

    async def health_check(self) -> Health:
        return Health(status=HealthStatus.HEALTHY)


@dataclass(frozen=True)
class Sent:
    """One message the runner handed to `send`."""

    message: RunJob
    queue: str
    priority: int
    delay_s: float


def make_settings(policy: RetryPolicy | None = None) -> Settings:
    """Two vendors and a model group "smart": openai's gpt-4o first, then anthropic's Claude."""
    return Settings(
        vendors={
            "openai": VendorConfig(type="openai"),
            "anthropic": VendorConfig(type="anthropic"),
        },
        model_groups={
            GROUP: [
                Deployment(vendor="openai", model=OPENAI_MODEL),
                Deployment(vendor="anthropic", model=ANTHROPIC_MODEL),
            ]
        },
        retry_policy=policy or fixed_policy(),
    )


def fixed_policy(**overrides: Any) -> RetryPolicy:
    """A fixed 1 s backoff with 2 retries, so delays are exact; any field overridden."""
    fields: dict[str, Any] = {
        "max_retries": 2,
        "backoff": BackoffStrategy.FIXED,
        "initial_delay_s": 1.0,
        "max_delay_s": 60.0,
        **overrides,
    }
    return RetryPolicy(**fields)


def reply(
    vendor: str,
    model: str,
    text: str = "hello there",
    *,
    prompt_tokens: int = 3,
    completion_tokens: int = 2,
    cost_usd: float = 0.25,
    latency_ms: float = 120.0,
) -> Response:
    """A finished reply as a vendor client would return it."""
    return Response(
        content=text,
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
        model=model,
        vendor=vendor,
        finish_reason=FinishReason.STOP,
        latency_ms=latency_ms,
        cost_usd=cost_usd,
    )


def server_error(vendor: str = "openai") -> VendorUnavailable:
    """What a vendor client raises for an HTTP 500."""
    return VendorUnavailable(SERVER_ERROR, vendor=vendor, status_code=500)


class World:
    """Store, clock, recorded sends, scripted vendors and the runner under test."""

    def __init__(
        self,
        settings: Settings,
        scripts: dict[str, list[Step]],
        *,
        held: Iterable[str] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = Clock()
        self.store = JobStore(fakeredis.FakeRedis(), PREFIX, now=self.clock)
        self.sent: list[Sent] = []
        self.vendors = {
            name: ScriptedVendor(name, settings.vendors[name], script)
            for name, script in scripts.items()
        }
        held_names = set(self.vendors) if held is None else set(held)
        self.runner = JobRunner(
            settings,
            self.store,
            {name: v for name, v in self.vendors.items() if name in held_names},
            call=lambda vendor, request, model, message: asyncio.run(
                call_vendor(vendor, request, model)
            ),
            send=self.send,
            now=self.clock,
            rng=random.Random(1234),
        )

    def send(self, message: RunJob, queue: str, priority: int, delay_s: float) -> None:
        self.sent.append(Sent(message, queue, priority, delay_s))

    def submit(self, request: Request) -> str:
        """Create a job exactly as the producer does; returns its id."""
        job_id = self.store.new_job_id()
        chosen = route(request, self.settings, rng=random.Random(0))
        self.store.create(job_id, request, chosen)
        return job_id

    def record(self, job_id: str) -> JobRecord:
        return self.store.get(job_id)

    def run_to_end(self, first: RunJob, max_steps: int = 20) -> list[Outcome]:
        """Run `first`, then each message sent, advancing the clock by its delay, until done."""
        outcomes: list[Outcome] = []
        message = first
        for _ in range(max_steps):
            sent_before = len(self.sent)
            outcome = self.runner.run(message)
            outcomes.append(outcome)
            if outcome.kind != "rescheduled":
                return outcomes
            assert len(self.sent) == sent_before + 1
            nxt = self.sent[-1]
            assert nxt.message == outcome.next_message
            self.clock.advance(nxt.delay_s)
            message = nxt.message
        raise AssertionError(f"the job did not end within {max_steps} messages: {outcomes}")


def event_kinds(record: JobRecord) -> list[JobEventKind]:
    return [event.kind for event in record.events]


def counter(world: World, name: str) -> float:
    """One raw statistics counter (0 when never written)."""
    value = world.store.redis.hget(world.store.keys.stats(), name)
    return float(value) if value is not None else 0.0


@pytest.fixture
def smart_request(make_request: Callable[..., Request]) -> Request:
    """A request for the "smart" group: openai gpt-4o, falling back to anthropic Claude."""
    return make_request(model=GROUP)


# --- success ------------------------------------------------------------------


def test_successful_attempt_writes_response_usage_cost_and_timings_once(
    smart_request: Request,
) -> None:
    answer = reply("openai", OPENAI_MODEL, cost_usd=0.25, latency_ms=120.0)
    world = World(make_settings(), {"openai": [answer], "anthropic": []})
    job_id = world.submit(smart_request)
    world.clock.advance(1.5)

    outcome = world.runner.run(RunJob(job_id))

    assert outcome == Outcome("succeeded", "openai")
    assert world.sent == []
    record = world.record(job_id)
    assert record.status is JobStatus.SUCCEEDED
    assert record.response == answer
    assert record.usage == Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    assert record.cost_usd == 0.25
    assert record.total_ms == 1500.0
    assert record.queue_wait_ms == 1500.0
    assert record.vendor_latency_ms == 120.0
    assert record.attempts == 1
    assert record.error is None
    assert event_kinds(record) == [
        JobEventKind.QUEUED,
        JobEventKind.STARTED,
        JobEventKind.SUCCEEDED,
    ]
    started = record.events[1]
    assert (started.attempt, started.vendor) == (0, "openai")
    assert record.events[2].vendor == "openai"
    assert world.store.wait_until_ended(job_id, 0.5) is True

    stats = world.store.stats()
    assert (stats.total_requests, stats.successful_requests, stats.failed_requests) == (1, 1, 0)
    assert (stats.prompt_tokens, stats.completion_tokens) == (3, 2)
    assert stats.total_cost_usd == 0.25
    assert stats.average_latency_ms == 120.0
    assert (stats.retries, stats.fallbacks) == (0, 0)
    assert stats.vendor_stats["openai"].requests == 1
    assert stats.vendor_stats["openai"].successes == 1
    assert "anthropic" not in stats.vendor_stats


def test_vendor_is_asked_for_the_model_its_route_names_not_the_group_name(
    smart_request: Request,
) -> None:
    world = World(make_settings(), {"openai": [reply("openai", OPENAI_MODEL)], "anthropic": []})
    job_id = world.submit(smart_request)

    world.runner.run(RunJob(job_id))

    assert world.vendors["openai"].calls == [OPENAI_MODEL]
    assert world.vendors["anthropic"].calls == []


def test_a_reply_the_vendor_left_unpriced_is_priced_from_the_built_in_table(
    smart_request: Request,
) -> None:
    answer = reply("openai", OPENAI_MODEL, prompt_tokens=1_000, completion_tokens=100, cost_usd=0)
    world = World(make_settings(), {"openai": [answer], "anthropic": []})
    job_id = world.submit(smart_request)

    world.runner.run(RunJob(job_id))

    # gpt-4o: $2.50 in, $10 out per million tokens.
    assert world.record(job_id).cost_usd == pytest.approx((1_000 * 2.5 + 100 * 10.0) / 1e6)
    assert world.store.stats().unpriced_calls == 0


def local_settings(**cost: Any) -> Settings:
    """One local vendor, whose models no built-in price covers, and its cost options."""
    return Settings(
        vendors={"local": VendorConfig(type="ollama")},
        cost_optimization=CostOptimization(**cost),
    )


def test_vendor_costs_price_a_call_nothing_else_prices(
    make_request: Callable[..., Request],
) -> None:
    answer = reply("local", "llama3", prompt_tokens=600, completion_tokens=400, cost_usd=0)
    world = World(local_settings(vendor_costs={"local": 2.0}), {"local": [answer]})
    job_id = world.submit(make_request(model="llama3", vendor="local"))

    world.runner.run(RunJob(job_id))

    assert world.record(job_id).cost_usd == pytest.approx(1_000 * 2.0 / 1e6)
    stats = world.store.stats()
    assert stats.total_cost_usd == pytest.approx(0.002)
    assert stats.unpriced_calls == 0


def test_a_call_nothing_prices_counts_as_unpriced_not_free(
    make_request: Callable[..., Request],
) -> None:
    answer = reply("local", "llama3", cost_usd=0)
    world = World(local_settings(), {"local": [answer]})
    job_id = world.submit(make_request(model="llama3", vendor="local"))

    world.runner.run(RunJob(job_id))

    assert world.record(job_id).cost_usd == 0.0
    stats = world.store.stats()
    assert (stats.successful_requests, stats.unpriced_calls) == (1, 1)
    assert stats.vendor_stats["local"].unpriced_calls == 1


def test_streamed_request_is_collected_into_one_response_with_exact_text_and_usage(
    make_request: Callable[..., Request],
) -> None:
    config = VendorConfig(
        type="mock", prices={"mock-1": Price(input_per_mtok=1.0, output_per_mtok=2.0)}
    )
    vendor = MockVendor("mock", config)
    request = make_request(model="mock-1", stream=True)

    response = asyncio.run(call_vendor(vendor, request, "mock-1"))

    assert response.content == "echo: Say hello."
    # The mock counts words: "Say hello." in, "echo: Say hello." out.
    assert response.usage == Usage(prompt_tokens=2, completion_tokens=3, total_tokens=5)
    assert response.model == "mock-1"
    assert response.vendor == "mock"
    assert response.finish_reason is FinishReason.STOP
    assert response.vendor_finish_reason == "stop"
    assert response.cost_usd == (2 * 1.0 + 3 * 2.0) / 1_000_000


def test_stream_that_ends_without_a_final_delta_is_a_retryable_vendor_failure(
    make_request: Callable[..., Request],
) -> None:
    class Truncated(ScriptedVendor):
        async def stream(
            self, request: Request, model: str | None = None
        ) -> AsyncIterator[StreamDelta]:
            yield StreamDelta(text="half an ")
            yield StreamDelta(text="answer")

    vendor = Truncated("truncated", VendorConfig(type="mock"))

    with pytest.raises(VendorUnavailable, match="ended its stream without a final delta"):
        asyncio.run(call_vendor(vendor, make_request(stream=True), "gpt-4o-mini"))


# --- rate limits and retries ----------------------------------------------------


def test_rate_limit_reschedules_on_same_queue_after_retry_after_and_blocks_the_vendor(
    make_request: Callable[..., Request],
) -> None:
    limited = VendorRateLimited("slow down", retry_after_s=2.0, vendor="openai")
    world = World(
        make_settings(fixed_policy(initial_delay_s=0.5, max_retries=3)),
        {"openai": [limited, reply("openai", OPENAI_MODEL)], "anthropic": []},
    )
    job_id = world.submit(make_request(model=GROUP, priority=7))
    world.clock.advance(1.0)

    outcome = world.runner.run(RunJob(job_id))

    nxt = RunJob(job_id, attempt=1, deployment=0, retry=1, vendor="openai")
    assert outcome.kind == "rescheduled"
    assert outcome.next_message == nxt
    assert outcome.queue == "llm.openai"
    assert outcome.delay_s == 2.0
    assert world.sent == [Sent(nxt, "llm.openai", 7, 2.0)]
    record = world.record(job_id)
    assert record.status is JobStatus.QUEUED
    retry = record.events[-1]
    assert retry.kind is JobEventKind.RETRY
    assert (retry.attempt, retry.vendor, retry.delay_s) == (1, "openai", 2.0)
    assert retry.reason == "slow down"
    assert world.store.blocks.until([GPT_4O, CLAUDE]) == {GPT_4O: START_S + 3.0}
    assert counter(world, "t:retries") == 1
    assert counter(world, "v:openai:retries") == 1
    assert counter(world, "t:fallbacks") == 0

    # Once the wait is over the deployment is no longer cooling down and is called again.
    world.clock.advance(2.0)
    assert world.runner.run(nxt).kind == "succeeded"
    assert world.vendors["openai"].calls == [OPENAI_MODEL, OPENAI_MODEL]
    assert world.store.stats().retries == 1


@pytest.mark.parametrize("backoff", list(BackoffStrategy))
def test_retry_after_longer_than_every_backoff_strategy_sets_the_delay(
    make_request: Callable[..., Request], backoff: BackoffStrategy
) -> None:
    limited = VendorRateLimited("slow down", retry_after_s=2.0, vendor="openai")
    world = World(
        make_settings(fixed_policy(backoff=backoff, initial_delay_s=0.5)),
        {"openai": [limited], "anthropic": []},
    )
    job_id = world.submit(make_request(model=GROUP))

    outcome = world.runner.run(RunJob(job_id))

    assert outcome.kind == "rescheduled"
    assert outcome.delay_s == 2.0
    assert world.sent[0].delay_s == 2.0


def test_policy_backoff_wins_when_longer_than_retry_after(
    make_request: Callable[..., Request],
) -> None:
    limited = VendorRateLimited("slow down", retry_after_s=2.0, vendor="openai")
    world = World(
        make_settings(fixed_policy(initial_delay_s=5.0)),
        {"openai": [limited], "anthropic": []},
    )
    job_id = world.submit(make_request(model=GROUP))

    outcome = world.runner.run(RunJob(job_id))

    assert outcome.delay_s == 5.0
    assert world.sent == [Sent(RunJob(job_id, 1, 0, 1, "openai"), "llm.openai", 5, 5.0)]
    assert world.record(job_id).events[-1].delay_s == 5.0
    # The vendor's own block is still only as long as it asked for.
    assert world.store.blocks.until([GPT_4O]) == {GPT_4O: START_S + 2.0}


def test_server_errors_exhaust_retries_then_fall_back_to_the_group_model_of_the_next_vendor(
    smart_request: Request,
) -> None:
    world = World(
        make_settings(fixed_policy(max_retries=2, initial_delay_s=1.0)),
        {
            "openai": [server_error(), server_error(), server_error()],
            "anthropic": [reply("anthropic", ANTHROPIC_MODEL, cost_usd=0.5)],
        },
    )
    job_id = world.submit(smart_request)

    outcomes = world.run_to_end(RunJob(job_id))

    assert [o.kind for o in outcomes] == ["rescheduled", "rescheduled", "rescheduled", "succeeded"]
    assert world.sent == [
        Sent(RunJob(job_id, 1, 0, 1, "openai"), "llm.openai", 5, 1.0),
        Sent(RunJob(job_id, 2, 0, 2, "openai"), "llm.openai", 5, 1.0),
        Sent(RunJob(job_id, 3, 1, 0, "anthropic"), "llm.anthropic", 5, 0.0),
    ]
    assert world.vendors["openai"].calls == [OPENAI_MODEL] * 3
    assert world.vendors["anthropic"].calls == [ANTHROPIC_MODEL]
    assert world.clock() == START_S + 2.0

    record = world.record(job_id)
    assert record.status is JobStatus.SUCCEEDED
    assert record.response is not None
    assert record.response.vendor == "anthropic"
    assert record.attempts == 4
    moves = [e for e in record.events if e.kind in (JobEventKind.RETRY, JobEventKind.REROUTED)]
    assert [e.kind for e in moves] == [
        JobEventKind.RETRY,
        JobEventKind.RETRY,
        JobEventKind.REROUTED,
    ]
    assert [e.attempt for e in moves] == [1, 2, 3]
    assert [e.delay_s for e in moves[:2]] == [1.0, 1.0]
    rerouted = moves[2]
    assert (rerouted.from_vendor, rerouted.to_vendor) == ("openai", "anthropic")
    assert rerouted.reason == f"retries exhausted: {SERVER_ERROR}"
    assert event_kinds(record)[-1] is JobEventKind.SUCCEEDED

    stats = world.store.stats()
    assert counter(world, "t:fallbacks") == 1
    assert (stats.retries, stats.fallbacks) == (2, 1)
    assert (stats.total_requests, stats.successful_requests) == (1, 1)
    assert stats.vendor_stats["openai"].retries == 2
    assert stats.vendor_stats["openai"].fallbacks == 1
    assert stats.vendor_stats["openai"].requests == 0
    assert stats.vendor_stats["anthropic"].successes == 1
    assert stats.total_cost_usd == 0.5


def test_last_deployment_failing_after_its_retries_fails_the_job_with_the_vendor_error(
    make_request: Callable[..., Request],
) -> None:
    world = World(
        make_settings(fixed_policy(max_retries=1)),
        {"openai": [server_error(), server_error()], "anthropic": []},
    )
    job_id = world.submit(make_request(model=OPENAI_MODEL))  # anthropic serves no gpt-*

    outcomes = world.run_to_end(RunJob(job_id))

    assert [o.kind for o in outcomes] == ["rescheduled", "failed"]
    assert outcomes[-1].errors == ["unavailable"]
    record = world.record(job_id)
    assert record.status is JobStatus.FAILED
    assert record.error is not None
    assert (record.error.kind, record.error.status_code) == ("unavailable", 500)
    assert record.error.job_id == job_id
    assert world.store.stats().vendor_stats["openai"].failures == 1


# --- final failures -----------------------------------------------------------------


def test_auth_error_fails_the_job_at_once_without_retry_or_fallback(
    smart_request: Request,
) -> None:
    refused = VendorAuthError("invalid API key", vendor="openai", status_code=401)
    world = World(make_settings(), {"openai": [refused], "anthropic": []})
    job_id = world.submit(smart_request)

    outcome = world.runner.run(RunJob(job_id))

    assert outcome == Outcome("failed", "invalid API key", errors=["auth"])
    assert world.sent == []
    assert world.vendors["anthropic"].calls == []
    record = world.record(job_id)
    assert record.status is JobStatus.FAILED
    assert record.error is not None
    assert (record.error.kind, record.error.vendor, record.error.status_code) == (
        "auth",
        "openai",
        401,
    )
    assert record.error.retryable is False
    assert record.error.job_id == job_id
    assert event_kinds(record) == [JobEventKind.QUEUED, JobEventKind.STARTED, JobEventKind.FAILED]
    stats = world.store.stats()
    assert (stats.failed_requests, stats.retries, stats.fallbacks) == (1, 0, 0)


def test_server_error_fails_at_once_when_retry_on_leaves_out_unavailable(
    make_request: Callable[..., Request],
) -> None:
    policy = fixed_policy(max_retries=3, retry_on=frozenset({"rate_limited", "timeout"}))
    world = World(make_settings(policy), {"openai": [server_error()], "anthropic": []})
    job_id = world.submit(make_request(model=OPENAI_MODEL))

    outcome = world.runner.run(RunJob(job_id))

    assert outcome == Outcome("failed", SERVER_ERROR, errors=["unavailable"])
    assert world.sent == []
    record = world.record(job_id)
    assert record.status is JobStatus.FAILED
    assert record.error is not None
    assert record.error.kind == "unavailable"
    assert JobEventKind.RETRY not in event_kinds(record)


def test_unexpected_vendor_exception_fails_the_job_instead_of_escaping_run(
    make_request: Callable[..., Request],
) -> None:
    world = World(make_settings(), {"openai": [RuntimeError("boom")], "anthropic": []})
    job_id = world.submit(make_request(model=OPENAI_MODEL))

    outcome = world.runner.run(RunJob(job_id))

    assert outcome.kind == "failed"
    assert outcome.errors == ["unavailable"]
    record = world.record(job_id)
    assert record.status is JobStatus.FAILED
    assert record.error is not None
    assert record.error.kind == "unavailable"
    assert record.error.vendor == "openai"
    assert record.error.message == "openai client failed unexpectedly: RuntimeError: boom"
    assert world.sent == []


def test_a_redis_error_during_the_call_escapes_run_and_leaves_the_job_running(
    make_request: Callable[..., Request],
) -> None:
    # A stream's chunks could not be written: Redis failed, not the vendor. The task
    # runs the message again once Redis answers (dispatcher.runner.outage); the job must not fail.
    lost = redis.ConnectionError("Connection closed by server.")
    world = World(make_settings(), {"openai": [lost], "anthropic": []})
    job_id = world.submit(make_request(model=OPENAI_MODEL))

    with pytest.raises(redis.ConnectionError):
        world.runner.run(RunJob(job_id))

    record = world.record(job_id)
    assert record.status is JobStatus.RUNNING
    assert record.error is None
    assert world.sent == []


# --- deadlines -------------------------------------------------------------------


def test_deadline_that_would_pass_during_backoff_fails_with_timeout_naming_last_error(
    make_request: Callable[..., Request],
) -> None:
    world = World(
        make_settings(fixed_policy(initial_delay_s=4.0, max_retries=5)),
        {"openai": [server_error()], "anthropic": []},
    )
    job_id = world.submit(make_request(model=OPENAI_MODEL, timeout_s=3.0))
    world.clock.advance(0.5)

    outcome = world.runner.run(RunJob(job_id))

    assert outcome.kind == "failed"
    assert outcome.errors == ["deadline_exceeded"]
    assert outcome.detail == (
        "the job's deadline (3 s after submit) would pass before the next retry; "
        f"last error: {SERVER_ERROR}"
    )
    assert world.sent == []
    record = world.record(job_id)
    assert record.status is JobStatus.FAILED
    assert record.error is not None
    assert (record.error.kind, record.error.vendor, record.error.status_code) == (
        "deadline_exceeded",
        "openai",
        500,
    )
    assert JobEventKind.RETRY not in event_kinds(record)
    assert record.total_ms == 500.0


def test_deadline_allows_retries_that_fit_and_fails_on_the_first_that_does_not(
    make_request: Callable[..., Request],
) -> None:
    world = World(
        make_settings(fixed_policy(initial_delay_s=4.0, max_retries=5)),
        {"openai": [server_error()] * 3, "anthropic": []},
    )
    job_id = world.submit(make_request(model=OPENAI_MODEL, timeout_s=10.0))

    outcomes = world.run_to_end(RunJob(job_id))

    # Retries at +4 and +8 fit in 10 s; the one at +12 would not.
    assert [o.kind for o in outcomes] == ["rescheduled", "rescheduled", "failed"]
    assert outcomes[-1].errors == ["deadline_exceeded"]
    assert world.vendors["openai"].calls == [OPENAI_MODEL] * 3
    assert len(world.sent) == 2


def test_message_arriving_after_the_deadline_fails_without_calling_the_vendor(
    make_request: Callable[..., Request],
) -> None:
    world = World(make_settings(), {"openai": [reply("openai", OPENAI_MODEL)], "anthropic": []})
    job_id = world.submit(make_request(model=OPENAI_MODEL, timeout_s=5.0))
    world.clock.advance(6.0)

    outcome = world.runner.run(RunJob(job_id))

    assert outcome.kind == "failed"
    assert outcome.errors == ["deadline_exceeded"]
    assert outcome.detail == "the job's deadline (5 s after submit) passed before it could run"
    assert world.vendors["openai"].calls == []
    assert world.sent == []
    record = world.record(job_id)
    assert record.status is JobStatus.FAILED
    assert record.error is not None
    assert record.error.kind == "deadline_exceeded"
    assert event_kinds(record) == [JobEventKind.QUEUED, JobEventKind.FAILED]
    assert record.total_ms == 6000.0


# --- cancelled, stale and duplicate messages --------------------------------------------


def test_job_cancelled_before_it_runs_is_skipped_without_calling_the_vendor(
    smart_request: Request,
) -> None:
    world = World(make_settings(), {"openai": [reply("openai", OPENAI_MODEL)], "anthropic": []})
    job_id = world.submit(smart_request)
    assert world.store.cancel(job_id) is True

    outcome = world.runner.run(RunJob(job_id))

    assert outcome == Outcome("skipped", "already cancelled")
    assert world.vendors["openai"].calls == []
    assert world.sent == []
    assert world.record(job_id).status is JobStatus.CANCELLED
    stats = world.store.stats()
    assert (stats.cancelled_requests, stats.total_requests) == (1, 0)


def test_job_cancelled_during_the_vendor_call_stays_cancelled_and_the_reply_is_dropped(
    smart_request: Request,
) -> None:
    world = World(make_settings(), {"openai": [], "anthropic": []})
    job_id = world.submit(smart_request)

    def cancel_then_answer(request: Request, model: str | None) -> Response:
        world.store.cancel(job_id)
        return reply("openai", OPENAI_MODEL)

    world.vendors["openai"].script.append(cancel_then_answer)

    outcome = world.runner.run(RunJob(job_id))

    assert outcome.kind == "skipped"
    record = world.record(job_id)
    assert record.status is JobStatus.CANCELLED
    assert record.response is None
    stats = world.store.stats()
    assert (stats.cancelled_requests, stats.successful_requests, stats.total_requests) == (1, 0, 0)


def test_older_attempt_redelivered_after_a_retry_is_skipped(smart_request: Request) -> None:
    world = World(
        make_settings(),
        {"openai": [server_error(), reply("openai", OPENAI_MODEL)], "anthropic": []},
    )
    job_id = world.submit(smart_request)
    first = RunJob(job_id)
    assert world.runner.run(first).kind == "rescheduled"

    outcome = world.runner.run(first)

    assert outcome.kind == "skipped"
    assert outcome.detail == "stale: attempt 0 < 1"
    assert world.vendors["openai"].calls == [OPENAI_MODEL]
    assert len(world.sent) == 1
    assert world.record(job_id).status is JobStatus.QUEUED
    # The newer message still runs the job.
    assert world.runner.run(world.sent[0].message).kind == "succeeded"


def test_older_attempt_redelivered_while_its_vendor_cools_down_sends_nothing(
    smart_request: Request,
) -> None:
    # A 429 blocks openai for 30 s and schedules attempt 1; then the worker dies before
    # acknowledging attempt 0, so attempt 0 comes back while openai is still blocked.
    limited = VendorRateLimited("slow down", retry_after_s=30.0, vendor="openai")
    world = World(make_settings(), {"openai": [limited], "anthropic": []})
    job_id = world.submit(smart_request)
    first = RunJob(job_id)
    assert world.runner.run(first).kind == "rescheduled"
    events_before = len(world.record(job_id).events)

    outcome = world.runner.run(first)

    assert outcome.kind == "skipped"
    assert world.sent == [Sent(RunJob(job_id, 1, 0, 1, "openai"), "llm.openai", 5, 30.0)]
    assert len(world.record(job_id).events) == events_before
    assert counter(world, "t:fallbacks") == 0


def test_finishing_message_redelivered_after_the_job_ended_is_skipped_and_counted_once(
    smart_request: Request,
) -> None:
    world = World(
        make_settings(),
        {"openai": [reply("openai", OPENAI_MODEL), reply("openai", OPENAI_MODEL)], "anthropic": []},
    )
    job_id = world.submit(smart_request)
    message = RunJob(job_id)
    assert world.runner.run(message).kind == "succeeded"
    stats_before = world.store.stats()
    record_before = world.record(job_id)

    outcome = world.runner.run(message)

    assert outcome == Outcome("skipped", "already succeeded")
    assert world.vendors["openai"].calls == [OPENAI_MODEL]
    assert world.store.stats() == stats_before
    assert world.store.stats().successful_requests == 1
    assert world.record(job_id) == record_before
    assert world.sent == []


def test_message_for_a_missing_job_is_skipped() -> None:
    world = World(make_settings(), {"openai": [], "anthropic": []})

    unknown = world.runner.run(RunJob("0" * 32))
    not_an_id = world.runner.run(RunJob("../../etc"))

    assert unknown == Outcome("skipped", "no such job (expired, or never created)")
    assert not_an_id == Outcome("skipped", "no such job (expired, or never created)")


def test_message_naming_a_deployment_the_route_lacks_is_skipped(
    make_request: Callable[..., Request],
) -> None:
    world = World(make_settings(), {"openai": [], "anthropic": []})
    job_id = world.submit(make_request(model=OPENAI_MODEL))  # one deployment only

    outcome = world.runner.run(RunJob(job_id, attempt=0, deployment=1))

    assert outcome == Outcome("skipped", "the route has no deployment 1")
    assert world.vendors["openai"].calls == []


def test_message_naming_its_vendor_runs_like_one_that_does_not(
    smart_request: Request,
) -> None:
    world = World(
        make_settings(),
        {"openai": [reply("openai", OPENAI_MODEL), reply("openai", OPENAI_MODEL, "second")]},
    )
    named, unnamed = world.submit(smart_request), world.submit(smart_request)

    assert world.runner.run(RunJob(named, vendor="openai")) == Outcome("succeeded", "openai")
    assert world.runner.run(RunJob(unnamed)) == Outcome("succeeded", "openai")

    first, second = world.record(named), world.record(unnamed)
    assert (first.status, second.status) == (JobStatus.SUCCEEDED, JobStatus.SUCCEEDED)
    assert event_kinds(first) == event_kinds(second)
    assert world.vendors["openai"].calls == [OPENAI_MODEL, OPENAI_MODEL]


def test_message_whose_vendor_contradicts_the_route_fails_the_job_without_a_call(
    smart_request: Request,
) -> None:
    world = World(make_settings(), {"openai": [], "anthropic": []})
    job_id = world.submit(smart_request)  # deployment 0 is openai

    outcome = world.runner.run(RunJob(job_id, deployment=0, vendor="anthropic"))

    assert outcome.kind == "failed"
    assert outcome.detail == (
        "message for deployment 0 on 'anthropic' does not match the job's route (2 deployments)"
    )
    assert world.record(job_id).status is JobStatus.FAILED
    assert world.vendors["openai"].calls == world.vendors["anthropic"].calls == []


# --- deployments cooling down --------------------------------------------------------


def test_blocked_vendor_is_skipped_for_the_next_free_deployment_of_the_route(
    smart_request: Request,
) -> None:
    world = World(
        make_settings(),
        {"openai": [], "anthropic": [reply("anthropic", ANTHROPIC_MODEL)]},
    )
    job_id = world.submit(smart_request)
    world.store.blocks.block("openai", OPENAI_MODEL, 30.0)

    outcome = world.runner.run(RunJob(job_id))

    nxt = RunJob(job_id, attempt=1, deployment=1, retry=0, vendor="anthropic")
    assert outcome.kind == "rescheduled"
    assert (outcome.next_message, outcome.queue, outcome.delay_s) == (nxt, "llm.anthropic", 0.0)
    assert world.sent == [Sent(nxt, "llm.anthropic", 5, 0.0)]
    assert world.vendors["openai"].calls == []
    rerouted = world.record(job_id).events[-1]
    assert rerouted.kind is JobEventKind.REROUTED
    assert (rerouted.from_vendor, rerouted.to_vendor, rerouted.attempt) == (
        "openai",
        "anthropic",
        1,
    )
    assert rerouted.reason == "gpt-4o on openai is cooling down after a rate limit"
    assert counter(world, "t:fallbacks") == 1
    assert counter(world, "v:openai:fallbacks") == 1

    assert world.runner.run(nxt).kind == "succeeded"
    assert world.vendors["anthropic"].calls == [ANTHROPIC_MODEL]
    assert world.vendors["openai"].calls == []


def test_every_deployment_blocked_waits_exactly_until_the_earliest_unblocks(
    smart_request: Request,
) -> None:
    world = World(
        make_settings(),
        {"openai": [], "anthropic": [reply("anthropic", ANTHROPIC_MODEL)]},
    )
    job_id = world.submit(smart_request)
    world.store.blocks.block("openai", OPENAI_MODEL, 30.0)
    world.store.blocks.block("anthropic", ANTHROPIC_MODEL, 10.0)

    outcome = world.runner.run(RunJob(job_id))

    nxt = RunJob(job_id, attempt=1, deployment=1, retry=0, vendor="anthropic")
    assert outcome.kind == "rescheduled"
    assert (outcome.next_message, outcome.queue, outcome.delay_s) == (nxt, "llm.anthropic", 10.0)
    assert world.sent == [Sent(nxt, "llm.anthropic", 5, 10.0)]
    waited = world.record(job_id).events[-1]
    assert waited.kind is JobEventKind.RETRY
    assert (waited.vendor, waited.delay_s, waited.attempt) == ("anthropic", 10.0, 1)
    assert waited.reason == f"waiting 10.00 s for {ANTHROPIC_MODEL} on anthropic to cool down"
    assert world.vendors["openai"].calls == []
    assert world.vendors["anthropic"].calls == []

    world.clock.advance(10.0)
    assert world.runner.run(nxt).kind == "succeeded"
    assert world.vendors["anthropic"].calls == [ANTHROPIC_MODEL]


def test_waiting_for_another_deployment_to_unblock_starts_its_retry_count_afresh(
    smart_request: Request,
) -> None:
    # `retry` counts retries on one deployment (messages.py); openai's two retries
    # must not use up anthropic's budget when the job waits for anthropic instead.
    world = World(make_settings(fixed_policy(max_retries=2)), {"openai": [], "anthropic": []})
    job_id = world.submit(smart_request)
    world.store.blocks.block("openai", OPENAI_MODEL, 30.0)
    world.store.blocks.block("anthropic", ANTHROPIC_MODEL, 10.0)

    outcome = world.runner.run(RunJob(job_id, attempt=0, deployment=0, retry=2))

    assert outcome.next_message == RunJob(
        job_id, attempt=1, deployment=1, retry=0, vendor="anthropic"
    )


def test_every_deployment_blocked_past_the_deadline_fails_as_rate_limited(
    make_request: Callable[..., Request],
) -> None:
    world = World(make_settings(), {"openai": [], "anthropic": []})
    job_id = world.submit(make_request(model=GROUP, timeout_s=5.0))
    world.store.blocks.block("openai", OPENAI_MODEL, 30.0)
    world.store.blocks.block("anthropic", ANTHROPIC_MODEL, 20.0)

    outcome = world.runner.run(RunJob(job_id))

    assert outcome == Outcome(
        "failed",
        "every deployment of the route is cooling down past the job's deadline",
        errors=["rate_limited"],
    )
    assert world.sent == []
    assert world.vendors["openai"].calls == []
    assert world.vendors["anthropic"].calls == []
    record = world.record(job_id)
    assert record.status is JobStatus.FAILED
    assert record.error is not None
    assert (record.error.kind, record.error.vendor) == ("rate_limited", "openai")
    assert record.error.model_extra == {"retry_after_s": 20.0}


@pytest.mark.parametrize("limited", [False, True], ids=["unlimited", "rpm-limited"])
def test_a_429_blocks_only_its_model_and_the_vendors_other_models_go_on(
    make_request: Callable[..., Request], limited: bool
) -> None:
    settings = limited_settings(rpm=600) if limited else make_settings()
    world = World(
        settings,
        {
            "openai": [
                VendorRateLimited("slow down", retry_after_s=30.0, vendor="openai"),
                reply("openai", "gpt-4o-mini"),
            ]
        },
    )
    told, same_model = (world.submit(make_request(model=OPENAI_MODEL)) for _ in range(2))
    other_model = world.submit(make_request(model="gpt-4o-mini"))
    assert world.runner.run(RunJob(told, vendor="openai")).kind == "rescheduled"

    waiting = world.runner.run(RunJob(same_model, vendor="openai"))
    going_on = world.runner.run(RunJob(other_model, vendor="openai"))

    assert (waiting.kind, waiting.delay_s) == ("rescheduled", 30.0)
    assert waiting.detail == f"waiting 30.00 s for {OPENAI_MODEL} on openai to cool down"
    assert going_on == Outcome("succeeded", "openai")
    assert world.vendors["openai"].calls == [OPENAI_MODEL, "gpt-4o-mini"]
    assert world.store.blocks.until([GPT_4O, Deployment(vendor="openai", model="gpt-4o-mini")]) == {
        GPT_4O: START_S + 30.0
    }


def test_a_job_records_one_entry_for_a_wait_that_a_later_429_lengthened(
    make_request: Callable[..., Request],
) -> None:
    world = World(make_settings(), {"openai": [reply("openai", OPENAI_MODEL)]})
    job_id = world.submit(make_request(model=OPENAI_MODEL))
    world.store.blocks.block("openai", OPENAI_MODEL, 30.0)
    first = world.runner.run(RunJob(job_id, vendor="openai"))
    assert (first.kind, first.delay_s) == ("rescheduled", 30.0)
    # Another worker's call, in flight when the block began, gets a 429 of its own.
    world.clock.advance(20.0)
    world.store.blocks.block("openai", OPENAI_MODEL, 30.0)
    world.clock.advance(10.0)

    again = world.runner.run(first.next_message or RunJob(job_id))

    assert (again.kind, again.delay_s) == ("rescheduled", 20.0)  # to the block's new end
    world.clock.advance(20.0)
    assert world.runner.run(again.next_message or RunJob(job_id)).kind == "succeeded"
    record = world.record(job_id)
    assert event_kinds(record) == [
        JobEventKind.QUEUED,
        JobEventKind.RETRY,  # the wait, once
        JobEventKind.STARTED,
        JobEventKind.SUCCEEDED,
    ]
    assert record.events[1].reason == f"waiting 30.00 s for {OPENAI_MODEL} on openai to cool down"
    assert [sent.delay_s for sent in world.sent] == [30.0, 20.0]
    assert world.store.stats().retries == 0  # a wait is no retry


def test_a_job_that_waited_and_ran_records_its_next_wait_anew(
    make_request: Callable[..., Request],
) -> None:
    limited = VendorRateLimited("slow down", retry_after_s=5.0, vendor="openai")
    world = World(
        make_settings(fixed_policy(initial_delay_s=1.0)),
        {"openai": [limited, reply("openai", OPENAI_MODEL)]},
    )
    job_id = world.submit(make_request(model=OPENAI_MODEL))
    world.store.blocks.block("openai", OPENAI_MODEL, 2.0)
    waited = world.runner.run(RunJob(job_id, vendor="openai"))  # a wait of 2 s
    world.clock.advance(2.0)
    retried = world.runner.run(waited.next_message or RunJob(job_id))  # runs: a 429, 5 s
    world.clock.advance(4.0)
    world.store.blocks.block("openai", OPENAI_MODEL, 5.0)  # another 429, 4 s later
    world.clock.advance(1.0)

    waits_again = world.runner.run(retried.next_message or RunJob(job_id))
    world.clock.advance(waits_again.delay_s)
    last = world.runner.run(waits_again.next_message or RunJob(job_id))

    assert [o.kind for o in (waited, retried, waits_again, last)] == [
        "rescheduled",
        "rescheduled",
        "rescheduled",
        "succeeded",
    ]
    reasons = [e.reason for e in world.record(job_id).events if e.kind is JobEventKind.RETRY]
    assert reasons == [
        f"waiting 2.00 s for {OPENAI_MODEL} on openai to cool down",
        "slow down",
        f"waiting 4.00 s for {OPENAI_MODEL} on openai to cool down",
    ]


# --- queues ---------------------------------------------------------------------------


def test_message_for_a_vendor_this_worker_does_not_hold_goes_back_to_that_vendors_queue(
    make_request: Callable[..., Request],
) -> None:
    world = World(
        make_settings(),
        {"openai": [], "anthropic": [reply("anthropic", ANTHROPIC_MODEL)]},
        held=["openai"],
    )
    job_id = world.submit(make_request(model=GROUP, vendor="anthropic", priority=3))
    message = RunJob(job_id)

    outcome = world.runner.run(message)

    assert outcome == Outcome("rescheduled", "no vendor 'anthropic' in this worker")
    # It goes back naming its vendor, as every message we send does.
    assert world.sent == [Sent(RunJob(job_id, vendor="anthropic"), "llm.anthropic", 3, 0.0)]
    assert world.vendors["anthropic"].calls == []
    record = world.record(job_id)
    assert record.status is JobStatus.QUEUED
    assert event_kinds(record) == [JobEventKind.QUEUED]


# --- retry kinds -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (VendorRateLimited("429", retry_after_s=1.0), "rate_limited"),
        (VendorUnavailable("500"), "unavailable"),
        (StreamBroken("cut off", partial=True), "unavailable"),
        (VendorTimeout("504"), "timeout"),
        (CircuitOpen("open"), "circuit_open"),
        (VendorAuthError("401"), None),
        (VendorQuotaExceeded("quota"), None),
        (ContentFiltered("filtered"), None),
        (InvalidRequest("400"), None),
        (NoRoute("no vendor"), None),
        (BudgetExceeded("too dear"), None),
        (JobNotFound("gone"), None),
        (DispatcherError("generic"), None),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, DispatcherError) else str(value),
)
def test_retry_kind_maps_each_error_class_to_its_retry_policy_kind(
    error: DispatcherError, kind: str | None
) -> None:
    assert retry_kind(error) == kind


# --- shared rate limits ------------------------------------------------------------------


def limited_settings(**limits: Any) -> Settings:
    """`make_settings()`, with openai limited as given (e.g. rpm=60, rpm_burst=1)."""
    settings = make_settings()
    openai = settings.vendors["openai"].model_copy(update=limits)
    return settings.model_copy(update={"vendors": {**settings.vendors, "openai": openai}})


def test_job_over_the_shared_limit_waits_for_its_reserved_moment_without_a_vendor_call(
    make_request: Callable[..., Request],
) -> None:
    world = World(
        limited_settings(rpm=60, rpm_burst=1),  # one call a second
        {"openai": [reply("openai", OPENAI_MODEL), reply("openai", OPENAI_MODEL, "second")]},
    )
    first, second, third = (world.submit(make_request(model=OPENAI_MODEL)) for _ in range(3))
    assert world.runner.run(RunJob(first, vendor="openai")).kind == "succeeded"

    waiting = world.runner.run(RunJob(second, vendor="openai"))
    later = world.runner.run(RunJob(third, vendor="openai"))

    nxt = RunJob(second, attempt=1, vendor="openai")
    assert waiting == Outcome(
        "rescheduled", "waiting 1.00 s for openai's shared rate limit", nxt, 1.0, "llm.openai"
    )
    assert (later.kind, later.delay_s) == ("rescheduled", 2.0)  # in line behind the second
    assert world.vendors["openai"].calls == [OPENAI_MODEL]
    record = world.record(second)
    assert (record.status, record.attempts, record.started_at) == (JobStatus.QUEUED, 0, None)
    assert event_kinds(record) == [JobEventKind.QUEUED, JobEventKind.RETRY]
    assert counter(world, "v:openai:limit_waits") == counter(world, "t:limit_waits") == 2
    assert counter(world, "t:retries") == 0

    # At its moment the second job runs on what it already paid for: it takes nothing more.
    world.clock.advance(1.0)
    assert world.runner.run(nxt) == Outcome("succeeded", "openai")
    assert world.vendors["openai"].calls == [OPENAI_MODEL, OPENAI_MODEL]
    fourth = world.submit(make_request(model=OPENAI_MODEL))
    assert world.runner.run(RunJob(fourth, vendor="openai")).delay_s == 2.0


def test_job_whose_deadline_comes_before_capacity_fails_as_rate_limited(
    make_request: Callable[..., Request],
) -> None:
    world = World(
        limited_settings(rpm=60, rpm_burst=1), {"openai": [reply("openai", OPENAI_MODEL)]}
    )
    first = world.submit(make_request(model=OPENAI_MODEL))
    hurried = world.submit(make_request(model=OPENAI_MODEL, timeout_s=0.5))
    assert world.runner.run(RunJob(first, vendor="openai")).kind == "succeeded"

    outcome = world.runner.run(RunJob(hurried, vendor="openai"))

    assert outcome.kind == "failed"
    assert outcome.errors == ["rate_limited"]
    assert outcome.detail == (
        "openai's shared rate limit has no capacity before the job's deadline (next in 1.0 s)"
    )
    assert world.sent == []
    # Nothing was reserved for it: the next job is next in line.
    third = world.submit(make_request(model=OPENAI_MODEL))
    assert world.runner.run(RunJob(third, vendor="openai")).delay_s == 1.0


def test_a_tenants_own_limit_holds_it_back_while_another_tenant_runs(
    make_request: Callable[..., Request],
) -> None:
    world = World(
        limited_settings(tenant_limit=RateLimit(rpm=60, rpm_burst=1)),
        {"openai": [reply("openai", OPENAI_MODEL) for _ in range(3)]},
    )
    noisy = [world.submit(make_request(model=OPENAI_MODEL, user="noisy")) for _ in range(2)]
    quiet = world.submit(make_request(model=OPENAI_MODEL, user="quiet"))

    outcomes = [world.runner.run(RunJob(j, vendor="openai")).kind for j in [*noisy, quiet]]

    assert outcomes == ["succeeded", "rescheduled", "succeeded"]


def test_the_reservation_is_settled_with_the_tokens_the_vendor_reported(
    make_request: Callable[..., Request],
) -> None:
    world = World(
        limited_settings(tpm=6_000, tpm_burst=1_000),  # 100 tokens a second
        {"openai": [reply("openai", OPENAI_MODEL, prompt_tokens=300, completion_tokens=200)]},
    )
    request = make_request(model=OPENAI_MODEL, max_tokens=50)
    job_id = world.submit(request)

    assert world.runner.run(RunJob(job_id, vendor="openai")).kind == "succeeded"

    # 500 tokens used, whatever the estimate: 500 remain, so 1,000 are 5 s away.
    bucket = Bucket(world.store.keys.limit("openai", "tpm"), "tpm", 100.0, 1_000.0, 1_000.0)
    assert world.runner.limiter.acquire([bucket]).wait_s == pytest.approx(5.0)


def test_a_job_cancelled_while_it_waits_for_capacity_gives_its_charge_back(
    make_request: Callable[..., Request],
) -> None:
    world = World(
        limited_settings(rpm=60, rpm_burst=1), {"openai": [reply("openai", OPENAI_MODEL)]}
    )
    first, waiting = (world.submit(make_request(model=OPENAI_MODEL)) for _ in range(2))
    assert world.runner.run(RunJob(first, vendor="openai")).kind == "succeeded"
    nxt = world.runner.run(RunJob(waiting, vendor="openai")).next_message
    assert nxt is not None
    assert world.store.cancel(waiting)

    world.clock.advance(1.0)
    assert world.runner.run(nxt) == Outcome("skipped", "already cancelled")

    # The slot it held is free again: the next job runs at once.
    third = world.submit(make_request(model=OPENAI_MODEL))
    world.vendors["openai"].script.append(reply("openai", OPENAI_MODEL))
    assert world.runner.run(RunJob(third, vendor="openai")).kind == "succeeded"


# --- circuit breakers -------------------------------------------------------------------


def breaker_settings(threshold: int = 2, reset_s: float = 30.0) -> Settings:
    """`make_settings()` with no retries, so every failure moves on at once."""
    return make_settings(fixed_policy(max_retries=0)).model_copy(
        update={
            "circuit_breaker": CircuitBreaker(failure_threshold=threshold, reset_timeout_s=reset_s)
        }
    )


def test_failures_in_a_row_open_the_circuit_and_later_jobs_go_straight_to_the_fallback(
    smart_request: Request,
) -> None:
    world = World(
        breaker_settings(threshold=2),
        {
            "openai": [server_error(), server_error()],
            "anthropic": [reply("anthropic", ANTHROPIC_MODEL) for _ in range(3)],
        },
    )
    jobs = [world.submit(smart_request) for _ in range(3)]
    for job_id in jobs[:2]:
        outcomes = world.run_to_end(RunJob(job_id, vendor="openai"))
        assert [o.kind for o in outcomes] == ["rescheduled", "succeeded"]

    outcome = world.runner.run(RunJob(jobs[2], vendor="openai"))

    assert outcome.kind == "rescheduled"
    assert outcome.detail == "openai's circuit is open after repeated failures"
    assert outcome.queue == "llm.anthropic"
    assert world.vendors["openai"].calls == [OPENAI_MODEL, OPENAI_MODEL]  # not a third time
    assert world.store.circuits.states(["openai", "anthropic"], 30.0) == {
        "openai": CircuitView(CircuitState.OPEN, START_S + 30.0)
    }


def test_a_success_between_failures_keeps_the_circuit_closed(smart_request: Request) -> None:
    world = World(
        breaker_settings(threshold=2),
        {
            "openai": [server_error(), reply("openai", OPENAI_MODEL), server_error()],
            "anthropic": [reply("anthropic", ANTHROPIC_MODEL) for _ in range(2)],
        },
    )
    for _ in range(3):
        world.run_to_end(RunJob(world.submit(smart_request), vendor="openai"))

    assert world.store.circuits.states(["openai"], 30.0) == {}


def test_after_the_reset_timeout_one_probe_goes_and_its_success_closes_the_circuit(
    smart_request: Request,
) -> None:
    world = World(
        breaker_settings(threshold=1, reset_s=10.0),
        {
            "openai": [
                server_error(),
                reply("openai", OPENAI_MODEL),
                reply("openai", OPENAI_MODEL),
            ],
            "anthropic": [reply("anthropic", ANTHROPIC_MODEL)],
        },
    )
    world.run_to_end(RunJob(world.submit(smart_request), vendor="openai"))  # opens it
    world.clock.advance(10.0)
    probe, other = world.submit(smart_request), world.submit(smart_request)

    # The probe is claimed; while it is under way nobody else may call the vendor.
    check = CircuitCheck(reset_timeout_s=10.0, probe_timeout_s=60.0)
    probe_claim = world.store.claim(probe, 0, "openai", circuit=check)
    other_claim = world.store.claim(other, 0, "openai", circuit=check)
    assert (probe_claim.verdict, other_claim.verdict) == ("ok", "open")
    assert other_claim.blocked_until == START_S + 10.0 + 60.0
    assert world.store.circuits.states(["openai"], 10.0)["openai"].state is CircuitState.OPEN

    # The probe's success closes the circuit for everyone.
    response = reply("openai", OPENAI_MODEL)
    assert world.store.finish(
        probe, JobStatus.SUCCEEDED, vendor="openai", response=response, close_circuit=True
    )
    assert world.store.circuits.states(["openai"], 10.0) == {}
    assert world.runner.run(RunJob(other, vendor="openai")).kind == "succeeded"


def test_the_runner_sends_the_probe_when_the_reset_timeout_has_passed(
    smart_request: Request,
) -> None:
    world = World(
        breaker_settings(threshold=1, reset_s=10.0),
        {
            "openai": [server_error(), reply("openai", OPENAI_MODEL)],
            "anthropic": [reply("anthropic", ANTHROPIC_MODEL), reply("anthropic", ANTHROPIC_MODEL)],
        },
    )
    world.run_to_end(RunJob(world.submit(smart_request), vendor="openai"))  # opens it
    world.clock.advance(5.0)
    early = world.runner.run(RunJob(world.submit(smart_request), vendor="openai"))
    world.clock.advance(5.0)

    probe = world.runner.run(RunJob(world.submit(smart_request), vendor="openai"))

    assert early.queue == "llm.anthropic"  # still open: the fallback serves it
    assert probe == Outcome("succeeded", "openai")
    assert world.store.circuits.states(["openai"], 10.0) == {}


def test_a_failed_probe_opens_the_circuit_again_for_a_whole_reset_timeout(
    smart_request: Request,
) -> None:
    world = World(
        breaker_settings(threshold=3, reset_s=10.0),
        {
            "openai": [server_error()] * 4,
            "anthropic": [reply("anthropic", ANTHROPIC_MODEL) for _ in range(4)],
        },
    )
    for _ in range(3):
        world.run_to_end(RunJob(world.submit(smart_request), vendor="openai"))
    world.clock.advance(10.0)

    outcomes = world.run_to_end(RunJob(world.submit(smart_request), vendor="openai"))

    assert [o.kind for o in outcomes] == ["rescheduled", "succeeded"]  # probe failed: fallback
    assert world.store.circuits.states(["openai"], 10.0) == {
        "openai": CircuitView(CircuitState.OPEN, START_S + 20.0)
    }


def test_auth_and_rate_limit_errors_do_not_count_against_the_circuit(
    smart_request: Request,
) -> None:
    limited = VendorRateLimited("slow down", vendor="openai", status_code=429)
    denied = VendorAuthError("bad key", vendor="openai", status_code=401)
    world = World(
        breaker_settings(threshold=1),
        {"openai": [limited, denied], "anthropic": [reply("anthropic", ANTHROPIC_MODEL)]},
    )
    world.run_to_end(RunJob(world.submit(smart_request), vendor="openai"))
    world.run_to_end(RunJob(world.submit(smart_request), vendor="openai"))

    assert world.store.circuits.states(["openai"], 30.0) == {}


def test_with_breakers_off_failures_never_open_a_circuit(smart_request: Request) -> None:
    settings = breaker_settings(threshold=1).model_copy(
        update={"circuit_breaker": CircuitBreaker(enabled=False, failure_threshold=1)}
    )
    world = World(
        settings,
        {
            "openai": [server_error(), server_error()],
            "anthropic": [reply("anthropic", ANTHROPIC_MODEL)] * 2,
        },
    )
    for _ in range(2):
        world.run_to_end(RunJob(world.submit(smart_request), vendor="openai"))

    assert world.vendors["openai"].calls == [OPENAI_MODEL, OPENAI_MODEL]
    assert world.store.circuits.states(["openai"], 30.0) == {}


# --- many messages at once (a batch message's items) ----------------------------------


def test_run_many_runs_each_message_as_run_would_and_reports_half_done_once(
    make_request: Callable[..., Request],
) -> None:
    world = World(
        make_settings(),
        {
            "openai": [reply("openai", "gpt-4o-mini"), server_error(), reply("openai", "x")],
            "anthropic": [],
        },
    )
    ids = [world.submit(make_request()) for _ in range(3)]
    ended = world.store.new_job_id()
    world.store.create(ended, make_request(), route(make_request(), world.settings))
    world.store.cancel(ended)
    halves: list[int] = []

    outcomes = world.runner.run_many(
        [RunJob(job_id, vendor="openai") for job_id in [*ids, ended]],
        half_done=lambda: halves.append(len(world.sent)),
    )

    assert [o.kind for o in outcomes] == ["succeeded", "rescheduled", "succeeded", "skipped"]
    assert outcomes[3].detail == "already cancelled"
    assert halves == [0], "once, as soon as the skipped one and the first success ended"
    assert world.record(ids[0]).status is JobStatus.SUCCEEDED
    assert world.record(ids[1]).status is JobStatus.QUEUED
    assert world.sent[0].message == RunJob(ids[1], 1, 0, 1, "openai")


def test_run_many_leaves_jobs_another_copy_runs_and_does_not_report_half_done(
    make_request: Callable[..., Request],
) -> None:
    world = World(make_settings(), {"openai": [], "anthropic": []})
    ids = [world.submit(make_request()) for _ in range(2)]
    for job_id in ids:  # another copy of the message claimed them
        assert world.store.claim(job_id, 0, "openai").verdict == "ok"
    halves: list[str] = []

    outcomes = world.runner.run_many(
        [RunJob(job_id, vendor="openai", exclusive=True) for job_id in ids],
        half_done=lambda: halves.append("half"),
    )

    assert [o.detail for o in outcomes] == [BUSY, BUSY]
    assert halves == []
    assert world.vendors["openai"].calls == []
    # Redelivered (not exclusive), the same messages adopt the jobs a dead worker started.
    world.vendors["openai"].script = [reply("openai", "m"), reply("openai", "m")]
    adopted = world.runner.run_many([RunJob(job_id, vendor="openai") for job_id in ids])
    assert [o.kind for o in adopted] == ["succeeded", "succeeded"]


def test_run_many_claims_a_limited_vendors_jobs_with_their_buckets(
    make_request: Callable[..., Request],
) -> None:
    settings = make_settings()
    limited = VendorConfig(type="openai", rpm=60, rpm_burst=1)
    settings = settings.model_copy(update={"vendors": {**settings.vendors, "openai": limited}})
    world = World(settings, {"openai": [reply("openai", "m")] * 5, "anthropic": []})
    ids = [world.submit(make_request()) for _ in range(3)]

    outcomes = world.runner.run_many([RunJob(job_id, vendor="openai") for job_id in ids])

    # A 60 rpm bucket with a burst of one: the first goes now, the others wait their turn.
    assert [o.kind for o in outcomes] == ["succeeded", "rescheduled", "rescheduled"]
    assert [round(o.delay_s, 3) for o in outcomes[1:]] == [1.0, 2.0], "booked in turn"
    assert all("rate limit" in o.detail for o in outcomes[1:])
    assert world.vendors["openai"].calls == ["gpt-4o-mini"]


def test_the_call_is_given_the_jobs_deadline_and_a_cut_call_ends_the_job_without_tripping(
    make_request: Callable[..., Request],
) -> None:
    cut = DeadlineExceeded("the job's deadline passed during its call to openai", vendor="openai")
    world = World(
        breaker_settings(threshold=1),
        {"openai": [cut], "anthropic": [reply("anthropic", ANTHROPIC_MODEL)]},
    )
    given: list[RunJob] = []
    call = world.runner.call

    def recording(vendor: Vendor, request: Request, model: str, message: RunJob) -> Response:
        given.append(message)
        return call(vendor, request, model, message)

    world.runner.call = recording
    job_id = world.submit(make_request(model=OPENAI_MODEL, timeout_s=30.0))
    created = world.record(job_id).created_at.timestamp()

    outcome = world.runner.run(RunJob(job_id, vendor="openai"))

    assert [m.deadline for m in given] == [pytest.approx(created + 30.0)]
    assert (outcome.kind, outcome.errors) == ("failed", ["deadline_exceeded"])
    assert world.sent == []  # neither retried nor sent to the fallback
    assert world.store.circuits.states(["openai"], 30.0) == {}  # the job's clock, not the vendor
