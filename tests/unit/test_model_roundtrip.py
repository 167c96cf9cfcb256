"""Every model survives a trip through JSON unchanged (the form it takes in Redis)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr

import dispatcher
from dispatcher import (
    BatchCounts,
    BatchItem,
    BatchRecord,
    Chunk,
    CostOptimization,
    Deployment,
    FinishReason,
    JobError,
    JobEvent,
    JobEventKind,
    JobRecord,
    JobStatus,
    LatencyOptimization,
    LiveState,
    Message,
    Price,
    Request,
    Response,
    RetryPolicy,
    Route,
    RoutingCondition,
    RoutingRule,
    Stats,
    ToolCallDelta,
    Usage,
    VendorConfig,
    VendorDetail,
    VendorState,
    VendorStats,
    VendorStatus,
)
from dispatcher.config.policies import CircuitBreaker, LeastBusy
from dispatcher.config.schema import AuthConfig, RateLimit
from dispatcher.config.server import ApiKey, ServerConfig
from dispatcher.errors import VendorRateLimited
from dispatcher.models import (
    RESERVED_BODY_FIELDS,
    CircuitState,
    HealthStatus,
    StreamEvent,
    StreamEventType,
    StrictModel,
)
from dispatcher.routing.price_table import FamilyPrices, ModelRates, PriceTable
from dispatcher.state.vendor_detail import masked
from dispatcher.vendors import Health
from dispatcher.vendors.mock import MockBehaviour
from tests.chat_samples import CHAT_SAMPLES, RICH_REQUEST, RICH_RESPONSE

AT = datetime(2026, 11, 23, 17, 0, 0, 123456, tzinfo=UTC)
REQUEST = Request(
    model="gpt-4o",
    messages=[Message(role="system", content="Be brief."), Message(role="user", content="Hi ✓")],
    temperature=0.7,
    max_tokens=64,
    top_p=0.9,
    stream=True,
    stop=["###"],
    user="tenant-1",
    metadata={"team": "search"},
    vendor="openai",
    vendor_weights={"openai": 2.0},
    allow_fallback=False,
    priority=7,
    timeout_s=12.5,
    extra_body={"top_k": 1, "nested": {"list": [1, 2.5, None, True]}},
)
USAGE = Usage(prompt_tokens=10, completion_tokens=5)
RESPONSE = Response(
    content="Hello",
    usage=USAGE,
    model="gpt-4o-2026-01-01",
    vendor="openai",
    finish_reason=FinishReason.LENGTH,
    created_at=AT,
    latency_ms=812.5,
    cost_usd=0.00012,
    vendor_finish_reason="length",
    vendor_request_id="req_123",
)
ROUTE = Route(
    vendor="openai",
    model="gpt-4o",
    fallbacks=[Deployment(vendor="anthropic", model="claude-3-5-sonnet")],
    queue="llm.openai",
    priority=7,
    reason="weighted choice",
)

SAMPLES: dict[type[BaseModel], BaseModel] = {
    Message: REQUEST.messages[0],
    Request: REQUEST,
    Usage: USAGE,
    Response: RESPONSE,
    Chunk: Chunk(
        job_id="j1",
        seq=3,
        delta=" world",
        finish_reason=FinishReason.STOP,
        usage=USAGE,
        emitted_at=AT,
    ),
    Deployment: ROUTE.fallbacks[0],
    Route: ROUTE,
    JobEvent: JobEvent(
        kind=JobEventKind.RETRY, at=AT, attempt=2, vendor="openai", reason="429", delay_s=2.0
    ),
    JobError: JobError.model_validate(
        VendorRateLimited("slow down", retry_after_s=2.0, vendor="openai", job_id="j1").to_dict()
    ),
    JobRecord: JobRecord(
        job_id="j1",
        request=REQUEST,
        route=ROUTE,
        status=JobStatus.SUCCEEDED,
        attempts=2,
        events=[JobEvent(kind=JobEventKind.QUEUED, at=AT)],
        response=RESPONSE,
        batch_id="b1",
        created_at=AT,
        started_at=AT,
        finished_at=AT,
        queue_wait_ms=1.5,
        vendor_latency_ms=812.5,
        total_ms=820.0,
        usage=USAGE,
        cost_usd=0.00012,
    ),
    BatchCounts: BatchCounts(total=5, queued=1, running=1, succeeded=1, failed=1, cancelled=1),
    BatchRecord: BatchRecord(
        batch_id="b1",
        counts=BatchCounts(total=2, succeeded=1, running=1),
        created_at=AT,
        started_at=AT,
        prompt_tokens=12,
        completion_tokens=30,
        cost_usd=0.0004,
        eta_s=1.5,
        metadata={"team": "data"},
    ),
    BatchItem: BatchItem(
        index=3, custom_id="request-4", job_id="j1", status=JobStatus.SUCCEEDED, response=RESPONSE
    ),
    VendorStats: VendorStats(
        requests=3, successes=2, failures=1, total_cost_usd=0.5, avg_latency_ms=9
    ),
    Stats: Stats(
        total_requests=3,
        successful_requests=2,
        failed_requests=1,
        average_latency_ms=9.0,
        total_cost_usd=0.5,
        average_cost_usd=0.25,
        vendor_stats={"openai": VendorStats(requests=3, successes=2, failures=1)},
    ),
    VendorState: VendorState(
        health=HealthStatus.DEGRADED, circuit=CircuitState.HALF_OPEN, latency_ms=120.0, in_flight=3
    ),
    LiveState: LiveState(vendors={"openai": VendorState(health=HealthStatus.HEALTHY)}),
    Price: Price(input_per_mtok=2.5, output_per_mtok=10.0, cached_input_per_mtok=1.25),
    ModelRates: ModelRates(input=0.15, cached_input=0.075, output=0.6),
    FamilyPrices: FamilyPrices(
        sources=["https://example.com/pricing"],
        note="standard tier",
        models={"gpt-4o-mini": ModelRates(input=0.15, cached_input=0.075, output=0.6)},
    ),
    PriceTable: PriceTable(
        source_date=datetime(2026, 12, 7, tzinfo=UTC).date(),
        unit="USD per million tokens",
        families={
            "openai": FamilyPrices(
                sources=["https://example.com/pricing"],
                models={"o3": ModelRates(input=2.0, cached_input=0.5, output=8.0)},
            )
        },
    ),
    AuthConfig: AuthConfig(scheme="header", header_name="X-API-Key"),
    VendorConfig: VendorConfig(
        type="openai_compatible",
        base_url="http://127.0.0.1:8000/v1",
        timeout_s=5.0,
        headers={"X-Team": "search"},
        auth=AuthConfig(scheme="query", query_param="key"),
        models=["llama-*"],
        weight=2.0,
        priority=1,
        rpm=600,
        tpm=100_000,
        rpm_burst=20,
        model_limits={"llama-3-70b*": RateLimit(rpm=60, tpm_burst=None)},
        tenant_limit=RateLimit(rpm=30, rpm_burst=5),
        prices={"llama-*": Price(input_per_mtok=0.1, output_per_mtok=0.2)},
    ),
    RateLimit: RateLimit(rpm=120, tpm=40_000, rpm_burst=10, tpm_burst=8_000),
    CircuitBreaker: CircuitBreaker(enabled=True, failure_threshold=3, reset_timeout_s=12.5),
    ApiKey: ApiKey(key=SecretStr("acme-key-0123456789abcdef"), tenant="acme"),
    # Its keys are masked in JSON, on purpose: see the secret test below.
    ServerConfig: ServerConfig(
        max_body_bytes=1024,
        max_file_bytes=2048,
        file_ttl_s=60,
    ),
    LeastBusy: LeastBusy(enabled=True),
    VendorStatus: VendorStatus(
        name="openai",
        type="openai",
        health=HealthStatus.DEGRADED,
        health_detail="slow",
        health_latency_ms=2_400.0,
        health_checked_at=AT,
        circuit=CircuitState.HALF_OPEN,
        queue_depth=12,
        in_flight=3,
        requests=40,
        errors=2,
        avg_latency_ms=850.0,
        requests_per_minute=31.5,
        tokens_per_minute=9_000.0,
        rpm_limit=600,
        tpm_limit=None,
    ),
    VendorDetail: VendorDetail(
        name="local",
        enabled=True,
        endpoint="https://ops:***@llm.internal/v1",
        models=["llama-*"],
        config=masked(
            VendorConfig(
                type="openai_compatible",
                api_key=SecretStr("sk-live-0123456789abcdef"),
                base_url="https://ops:hunter2-0123@llm.internal/v1",
                headers={"X-Team-Token": "t0k3n-0123456789"},
                models=["llama-*"],
                rpm=60,
            )
        ),
        status=VendorStatus(name="local", type="openai_compatible", rpm_limit=60),
    ),
    RoutingCondition: RoutingCondition(model_pattern="gpt-4*", max_tokens=1000, user="t-*"),
    RoutingRule: RoutingRule(
        name="big", condition=RoutingCondition(temperature=0.5), vendor="openai", priority=3
    ),
    RetryPolicy: RetryPolicy(max_retries=5, backoff="linear", initial_delay_s=1, max_delay_s=4),
    CostOptimization: CostOptimization(enabled=True, max_cost_usd=0.01, vendor_costs={"a": 1}),
    LatencyOptimization: LatencyOptimization(enabled=True, latency_weights={"a": 2.0}),
    Health: Health(status=HealthStatus.DEGRADED, latency_ms=2500.0, detail="slow", checked_at=AT),
    StreamEvent: StreamEvent(
        seq=7,
        type=StreamEventType.DONE,
        job_id="j1",
        attempt=2,
        vendor="openai",
        model="gpt-4o-mini-2024-07-18",
        finish_reason=FinishReason.STOP,
        usage=USAGE,
        cost_usd=0.001,
    ),
    MockBehaviour: MockBehaviour(
        time_to_first_token_s=0.2,
        chunk_delay_s=0.05,
        chunk_count=4,
        failure_rate=0.1,
        failure_kinds=frozenset({"timeout", "rate_limited"}),
        retry_after_s=2.0,
        seed=7,
    ),
    ToolCallDelta: ToolCallDelta(index=1, id="call_9", name="lookup", arguments='{"q": '),
}


SAMPLES.update(CHAT_SAMPLES)


@pytest.mark.parametrize("model", [RICH_REQUEST, RICH_RESPONSE], ids=lambda m: type(m).__name__)
def test_tools_images_and_formats_round_trip_through_json(model: BaseModel) -> None:
    assert type(model).model_validate_json(model.model_dump_json()) == model


def _all_models() -> set[type[BaseModel]]:
    found: set[type[BaseModel]] = set()
    pending: list[type[BaseModel]] = [StrictModel]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith(dispatcher.__name__) and sub not in found:
                found.add(sub)
                pending.append(sub)
    return found


def test_every_model_has_a_round_trip_sample() -> None:
    missing = sorted(cls.__name__ for cls in _all_models() - set(SAMPLES))
    assert not missing, f"add a sample for: {missing}"


# Models whose every field is a secret or needs one: JSON masks them, so they cannot come back.
SECRET_ONLY = (ApiKey,)


@pytest.mark.parametrize(
    "model",
    [m for m in SAMPLES.values() if not isinstance(m, SECRET_ONLY)],
    ids=lambda m: type(m).__name__,
)
def test_model_round_trips_through_json(model: BaseModel) -> None:
    text = model.model_dump_json()
    assert type(model).model_validate_json(text) == model


def test_a_secret_never_survives_serialisation() -> None:
    vendor = VendorConfig(type="openai", api_key=SecretStr("sk-live-0123456789abcdef"))
    assert "sk-live-0123456789abcdef" not in vendor.model_dump_json()
    assert "sk-live-0123456789abcdef" not in repr(vendor)
    key = SAMPLES[ApiKey]
    assert "acme-key-0123456789abcdef" not in key.model_dump_json()
    assert "acme-key-0123456789abcdef" not in repr(key)


_text = st.text(min_size=1, max_size=40)
_messages = st.lists(
    st.builds(Message, role=st.sampled_from(["system", "user", "assistant"]), content=_text),
    min_size=1,
    max_size=4,
)
# A name: any printable text on one line (no control characters), as Request requires.
_names = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20)
_requests = st.builds(
    Request,
    model=_names,
    messages=_messages,
    temperature=st.none() | st.floats(0, 2),
    max_tokens=st.none() | st.integers(1, 200_000),
    top_p=st.none() | st.floats(0, 1),
    stream=st.booleans(),
    stop=st.none() | st.lists(_text, max_size=4),
    user=st.none() | _names,
    metadata=st.dictionaries(_names, st.text(max_size=10), max_size=3),
    priority=st.integers(0, 9),
    timeout_s=st.none() | st.floats(0.001, 1e6),
    extra_body=st.dictionaries(
        _names.filter(lambda key: key not in RESERVED_BODY_FIELDS),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=8,
        ),
        max_size=3,
    ),
)


@settings(max_examples=200, deadline=None)
@given(_requests)
def test_any_valid_request_round_trips_through_json(request: Request) -> None:
    assert Request.model_validate_json(request.model_dump_json()) == request
