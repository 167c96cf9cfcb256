"""The in-process mock vendor: predictable replies, exact streams, word counts, injected failures."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from dispatcher import (
    FinishReason,
    HealthStatus,
    Message,
    Request,
    StreamBroken,
    VendorConfig,
    VendorRateLimited,
    VendorTimeout,
    VendorUnavailable,
)
from dispatcher.errors import DispatcherError
from dispatcher.routing.pricing import Price
from dispatcher.vendors import mock
from dispatcher.vendors.base import StreamDelta, Vendor
from dispatcher.vendors.mock import (
    FailureKind,
    MockBehaviour,
    MockVendor,
    compose_answer,
    count_words,
    mock_answer,
    mock_reply,
    split_into_chunks,
    split_words,
)

CONFIG = VendorConfig(type="mock")


def make_vendor(name: str = "mock", **behaviour: object) -> MockVendor:
    return MockVendor(name, CONFIG, behaviour=MockBehaviour.model_validate(behaviour))


def failing(kind: FailureKind, **behaviour: object) -> MockVendor:
    return make_vendor(failure_rate=1.0, failure_kinds={kind}, **behaviour)


async def collect(vendor: Vendor, request: Request) -> list[StreamDelta]:
    return [delta async for delta in vendor.stream(request)]


async def collect_until_error(vendor: Vendor, request: Request) -> tuple[list[str], Exception]:
    """The texts a stream delivered before it failed, and the error."""
    received: list[str] = []
    try:
        async for delta in vendor.stream(request):
            received.append(delta.text)
    except DispatcherError as exc:
        return received, exc
    pytest.fail("the stream finished without failing")


@pytest.fixture
def recorded_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every asyncio.sleep the mock asks for, answered at once: tests never sleep."""
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr(mock.asyncio, "sleep", fake_sleep)
    return sleeps


# --- the deterministic reply ----------------------------------------------------------


def test_reply_echoes_the_last_user_message(make_request: Callable[..., Request]) -> None:
    request = make_request(
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content="first question"),
            Message(role="assistant", content="an answer"),
            Message(role="user", content="Say hello."),
        ]
    )
    assert mock_reply(request) == "echo: Say hello."


def test_reply_without_a_user_message_is_the_bare_prefix() -> None:
    assert compose_answer([("system", "only a system prompt")]).text == "echo: "


@pytest.mark.parametrize(
    "text",
    [
        "echo: Say hello.",
        "  leading spaces",
        "trailing spaces  ",
        "tabs\tand\nnewlines\n\n in  between",
        "   ",
        "",
        "one",
    ],
)
@pytest.mark.parametrize("chunk_count", [None, 1, 2, 3, 50])
def test_chunks_concatenate_to_exactly_the_text(text: str, chunk_count: int | None) -> None:
    chunks = split_into_chunks(text, chunk_count)
    assert "".join(chunks) == text
    assert len(chunks) <= (chunk_count or len(chunks))


def test_each_word_is_a_chunk_with_its_leading_whitespace() -> None:
    assert split_words("echo: Say  hello.\n") == ["echo:", " Say", "  hello.\n"]
    assert split_into_chunks("echo: Say  hello.") == ["echo:", " Say", "  hello."]


def test_chunk_count_spreads_the_words_evenly_without_splitting_one() -> None:
    assert split_into_chunks("a b c d e", 2) == ["a b c", " d e"]
    assert split_into_chunks("a b c d e f", 3) == ["a b", " c d", " e f"]
    assert split_into_chunks("a b", 5) == ["a", " b"]


def test_chunk_count_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="chunk_count"):
        split_into_chunks("a b", 0)


def test_usage_counts_words_of_all_input_and_of_the_reply(
    make_request: Callable[..., Request],
) -> None:
    request = make_request(
        messages=[
            Message(role="system", content="Be brief and kind."),
            Message(role="user", content="Say hello to everyone."),
        ]
    )
    answer = mock_answer(request)
    assert answer.text == "echo: Say hello to everyone."
    assert answer.prompt_tokens == 4 + 4
    assert answer.completion_tokens == 5
    assert answer.usage.total_tokens == 13
    assert count_words(" a\tb\nc ") == 3


def test_max_tokens_truncates_to_that_many_words_with_finish_length(
    make_request: Callable[..., Request],
) -> None:
    answer = mock_answer(make_request(max_tokens=2))
    assert (answer.text, answer.finish_reason, answer.completion_tokens) == (
        "echo: Say",
        FinishReason.LENGTH,
        2,
    )
    roomy = mock_answer(make_request(max_tokens=3))
    assert (roomy.text, roomy.finish_reason) == ("echo: Say hello.", FinishReason.STOP)


def test_stop_sequence_cuts_the_reply_just_before_it(make_request: Callable[..., Request]) -> None:
    answer = mock_answer(make_request(stop=["hello", " Sa"]))
    assert (answer.text, answer.finish_reason, answer.completion_tokens) == (
        "echo:",
        FinishReason.STOP,
        1,
    )


# --- MockVendor: replies -------------------------------------------------------------


async def test_complete_returns_the_predictable_reply(
    make_request: Callable[..., Request],
) -> None:
    response = await make_vendor().complete(make_request(), model="mock-large")
    assert response.content == "echo: Say hello."
    assert response.finish_reason == FinishReason.STOP
    assert response.vendor_finish_reason == "stop"
    assert response.model == "mock-large"
    assert response.vendor == "mock"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (2, 3)
    assert response.usage.total_tokens == 5


async def test_complete_is_deterministic(make_request: Callable[..., Request]) -> None:
    request = make_request(max_tokens=4)
    first = await make_vendor().complete(request)
    second = await make_vendor().complete(request)
    assert (first.content, first.usage, first.finish_reason) == (
        second.content,
        second.usage,
        second.finish_reason,
    )


async def test_stream_reassembles_exactly_the_complete_text(
    make_request: Callable[..., Request],
) -> None:
    request = make_request(messages=[Message(role="user", content="  spaced\tout \n words ")])
    vendor = make_vendor()
    deltas = await collect(vendor, request)
    complete = await vendor.complete(request)
    *texts, final = deltas
    assert [delta.text for delta in texts] == ["echo:", "   spaced", "\tout", " \n words "]
    assert "".join(delta.text for delta in texts) == complete.content
    assert all(delta.finish_reason is None for delta in texts)
    assert final.text == ""
    assert final.finish_reason == FinishReason.STOP
    assert final.usage == complete.usage
    assert final.model == request.model


async def test_stream_honours_chunk_count_and_max_tokens(
    make_request: Callable[..., Request],
) -> None:
    request = make_request(messages=[Message(role="user", content="a b c d e f g")], max_tokens=5)
    *texts, final = await collect(make_vendor(chunk_count=2), request)
    assert [delta.text for delta in texts] == ["echo: a b", " c d"]
    assert final.finish_reason == FinishReason.LENGTH
    assert final.vendor_finish_reason == "length"
    assert final.usage is not None
    assert final.usage.completion_tokens == 5


async def test_cost_comes_from_the_configured_price(make_request: Callable[..., Request]) -> None:
    config = VendorConfig(
        type="mock", prices={"*": Price(input_per_mtok=1_000_000.0, output_per_mtok=2_000_000.0)}
    )
    response = await MockVendor("mock", config).complete(make_request())
    assert response.cost_usd == pytest.approx(2 * 1.0 + 3 * 2.0)


# --- MockVendor: pacing --------------------------------------------------------------


async def test_default_behaviour_never_sleeps(
    make_request: Callable[..., Request], recorded_sleeps: list[float]
) -> None:
    vendor = MockVendor("mock", CONFIG)
    assert vendor.behaviour == MockBehaviour()
    await vendor.complete(make_request())
    await collect(vendor, make_request())
    assert recorded_sleeps == []


async def test_stream_waits_first_token_then_each_chunk_delay(
    make_request: Callable[..., Request], recorded_sleeps: list[float]
) -> None:
    vendor = make_vendor(time_to_first_token_s=0.25, chunk_delay_s=0.05)
    await collect(vendor, make_request())
    assert recorded_sleeps == [0.25, 0.05, 0.05]


async def test_complete_waits_as_long_as_the_whole_stream(
    make_request: Callable[..., Request], recorded_sleeps: list[float]
) -> None:
    vendor = make_vendor(time_to_first_token_s=0.25, chunk_delay_s=0.05)
    await vendor.complete(make_request())
    assert recorded_sleeps == [0.25, pytest.approx(0.1)]


# --- MockVendor: injected failures ---------------------------------------------------


async def test_rate_limited_carries_retry_after(make_request: Callable[..., Request]) -> None:
    vendor = failing("rate_limited", retry_after_s=2.5)
    for call in (vendor.complete(make_request()), collect(vendor, make_request())):
        with pytest.raises(VendorRateLimited) as caught:
            await call
        assert caught.value.retry_after_s == 2.5
        assert caught.value.vendor == "mock"
        assert caught.value.retryable


async def test_server_error_is_unavailable_with_status_500(
    make_request: Callable[..., Request],
) -> None:
    vendor = failing("server_error")
    for call in (vendor.complete(make_request()), collect(vendor, make_request())):
        with pytest.raises(VendorUnavailable) as caught:
            await call
        assert caught.value.status_code == 500
        assert not isinstance(caught.value, StreamBroken)


async def test_timeout_raises_vendor_timeout(make_request: Callable[..., Request]) -> None:
    vendor = failing("timeout")
    with pytest.raises(VendorTimeout):
        await vendor.complete(make_request())
    with pytest.raises(VendorTimeout):
        await collect(vendor, make_request())


async def test_midstream_drop_breaks_the_stream_after_half_the_chunks(
    make_request: Callable[..., Request],
) -> None:
    request = make_request(messages=[Message(role="user", content="one two three four five")])
    received, error = await collect_until_error(failing("midstream_drop"), request)
    assert isinstance(error, StreamBroken)
    assert error.partial
    assert received == ["echo:", " one", " two"]


async def test_midstream_drop_of_a_single_chunk_is_still_partial(
    make_request: Callable[..., Request],
) -> None:
    received, error = await collect_until_error(
        failing("midstream_drop", chunk_count=1), make_request()
    )
    assert isinstance(error, StreamBroken)
    assert error.partial
    assert received == ["echo: Say hello."]


async def test_midstream_drop_fails_a_complete_call_as_unavailable(
    make_request: Callable[..., Request],
) -> None:
    with pytest.raises(VendorUnavailable):
        await failing("midstream_drop").complete(make_request())


async def _outcomes(vendor: MockVendor, request: Request, calls: int) -> list[str]:
    outcomes: list[str] = []
    for _ in range(calls):
        try:
            await vendor.complete(request)
        except DispatcherError as exc:
            outcomes.append(exc.kind)
        else:
            outcomes.append("ok")
    return outcomes


async def test_failure_rate_fails_about_that_share_of_calls(
    make_request: Callable[..., Request],
) -> None:
    outcomes = Counter(await _outcomes(make_vendor(failure_rate=0.3, seed=7), make_request(), 1000))
    failures = 1000 - outcomes["ok"]
    # 300 expected, standard deviation about 14.5: the band is four of them each way.
    assert 240 <= failures <= 360
    kinds = {kind: count for kind, count in outcomes.items() if kind != "ok"}
    assert set(kinds) == {"rate_limited", "unavailable", "timeout"}
    assert all(count > 40 for count in kinds.values())


async def test_same_seed_fails_the_same_calls(make_request: Callable[..., Request]) -> None:
    request = make_request()
    first = await _outcomes(make_vendor(failure_rate=0.5, seed=42), request, 200)
    again = await _outcomes(make_vendor(failure_rate=0.5, seed=42), request, 200)
    other = await _outcomes(make_vendor(failure_rate=0.5, seed=43), request, 200)
    assert first == again
    assert first != other


async def test_without_a_seed_each_vendor_name_has_its_own_repeatable_sequence(
    make_request: Callable[..., Request],
) -> None:
    request = make_request()
    alpha = await _outcomes(make_vendor("alpha", failure_rate=0.5), request, 200)
    assert alpha == await _outcomes(make_vendor("alpha", failure_rate=0.5), request, 200)
    assert alpha != await _outcomes(make_vendor("beta", failure_rate=0.5), request, 200)


async def test_zero_failure_rate_never_fails(make_request: Callable[..., Request]) -> None:
    assert set(await _outcomes(make_vendor(failure_rate=0.0), make_request(), 200)) == {"ok"}


# --- MockVendor: the rest of the interface -------------------------------------------


async def test_health_is_always_healthy_at_zero_latency() -> None:
    health = await failing("server_error").health_check()
    assert health.status == HealthStatus.HEALTHY
    assert health.latency_ms == 0.0


def test_registry_style_construction_gives_a_quiet_vendor() -> None:
    vendor = MockVendor("mock", CONFIG, None)
    assert isinstance(vendor, Vendor)
    assert vendor.name == "mock"
    assert vendor.behaviour.failure_rate == 0.0
    assert vendor.behaviour.time_to_first_token_s == 0.0


def test_behaviour_refuses_unknown_fields_and_bad_values() -> None:
    with pytest.raises(ValidationError, match="unknown field 'latency'"):
        MockBehaviour.model_validate({"latency": 1.0})
    with pytest.raises(ValidationError):
        MockBehaviour(failure_rate=1.5)
    with pytest.raises(ValidationError):
        MockBehaviour.model_validate({"failure_kinds": ["meltdown"]})
    with pytest.raises(ValidationError, match="failure_kinds"):
        MockBehaviour(failure_rate=0.5, failure_kinds=frozenset())
    with pytest.raises(ValidationError):
        MockBehaviour().time_to_first_token_s = 1.0  # type: ignore[misc]
