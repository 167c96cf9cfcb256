"""Every constraint of the data model, and errors that name the field at fault."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Any

import pytest
from pydantic import ValidationError

from dispatcher import (
    Chunk,
    Deployment,
    FinishReason,
    JobStatus,
    Message,
    Request,
    Response,
    Route,
    Stats,
    Usage,
    VendorStats,
)

VALID: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _error_for(**changes: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Request.model_validate({**VALID, **changes})
    return caught.value


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"model": ""}, "model"),
        ({"model": "m" * 257}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages.0.content"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.01}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": -0.1}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop.0"),
        ({"user": ""}, "user"),
        ({"metadata": {"team": 7}}, "metadata.team"),
        ({"vendor": "Not A Vendor!"}, "vendor"),
        ({"vendor_weights": {"openai": -1.0}}, "vendor_weights.openai"),
        ({"vendor_weights": {"openai": 0.0}}, "vendor_weights"),
        ({"priority": 10}, "priority"),
        ({"priority": -1}, "priority"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"stream": "sometimes"}, "stream"),
        ({"extra_body": {"callback": object()}}, "extra_body.callback"),
        ({"extra_body": {"penalty": float("inf")}}, "extra_body.penalty"),
        ({"timeout_s": float("nan")}, "timeout_s"),
    ],
)
def test_a_bad_request_value_fails_naming_its_field(changes: dict[str, Any], path: str) -> None:
    error = _error_for(**changes)
    paths = [".".join(str(part) for part in e["loc"]) for e in error.errors()]
    assert any(p == path or p.startswith(path + ".") for p in paths), paths
    assert path.split(".", maxsplit=1)[0] in str(error)


def test_an_unknown_request_field_is_named_and_the_accepted_ones_listed() -> None:
    error = _error_for(max_token=100)
    message = str(error)
    assert "unknown field 'max_token' for Request" in message
    for accepted in Request.model_fields:
        assert accepted in message
    assert [e["loc"] for e in error.errors()] == [("max_token",)]


def test_an_unknown_message_field_is_reported_at_its_own_path() -> None:
    error = _error_for(messages=[{"role": "user", "content": "hi", "name": "bob"}])
    assert [e["loc"] for e in error.errors()] == [("messages", 0, "name")]
    assert "accepted fields: content, role" in str(error)


def test_every_mistake_in_a_request_is_reported_at_once() -> None:
    error = _error_for(temperature=9, max_tokens=0, colour="blue")
    assert {e["loc"][0] for e in error.errors()} == {"temperature", "max_tokens", "colour"}


def test_a_request_with_every_field_set_is_accepted(make_request: Callable[..., Request]) -> None:
    request = make_request(
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content="Hi"),
            Message(role="assistant", content="Hello"),
            Message(role="user", content="Bye"),
        ],
        temperature=0.0,
        max_tokens=1,
        top_p=1.0,
        stream=True,
        stop=["###", "END"],
        user="tenant-42",
        metadata={"team": "search"},
        vendor="openai",
        vendor_weights={"openai": 1.0, "anthropic": 0.0},
        allow_fallback=False,
        priority=9,
        timeout_s=30.0,
        extra_body={"logprobs": True, "prediction": {"type": "content", "content": "x"}},
    )
    assert request.extra_body == {
        "logprobs": True,
        "prediction": {"type": "content", "content": "x"},
    }
    assert request.stop == ["###", "END"]


def test_a_single_stop_string_becomes_a_list(make_request: Callable[..., Request]) -> None:
    assert make_request(stop="###").stop == ["###"]


def test_requests_are_frozen(make_request: Callable[..., Request]) -> None:
    request = make_request()
    with pytest.raises(ValidationError, match="frozen"):
        request.model = "other"  # type: ignore[misc]


def test_request_defaults_are_normal_priority_with_fallback_allowed(
    make_request: Callable[..., Request],
) -> None:
    request = make_request()
    assert request.priority == 5
    assert request.allow_fallback is True
    assert request.stream is False


def test_usage_total_defaults_to_prompt_plus_completion() -> None:
    assert Usage(prompt_tokens=12, completion_tokens=3).total_tokens == 15


def test_usage_keeps_the_vendor_total_when_given() -> None:
    # Vendors may count tokens beyond prompt + completion (e.g. cached or reasoning tokens).
    assert Usage(prompt_tokens=12, completion_tokens=3, total_tokens=20).total_tokens == 20


@pytest.mark.parametrize("field", ["prompt_tokens", "completion_tokens", "total_tokens"])
def test_usage_counts_cannot_be_negative(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Usage.model_validate({field: -1})


def test_response_finish_reason_must_be_one_of_the_common_set() -> None:
    with pytest.raises(ValidationError, match="finish_reason"):
        Response(content="x", model="m", vendor="v", finish_reason="end_turn")  # type: ignore[arg-type]
    assert {reason.value for reason in FinishReason} == {
        "stop",
        "length",
        "content_filter",
        "tool_calls",
        "error",
    }


def test_response_timestamps_are_timezone_aware_utc() -> None:
    response = Response(content="x", model="m", vendor="v")
    assert response.created_at.tzinfo is UTC


@pytest.mark.parametrize("field", ["latency_ms", "cost_usd"])
def test_response_latency_and_cost_cannot_be_negative(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Response.model_validate({"content": "x", "model": "m", "vendor": "v", field: -1})


def test_chunk_sequence_numbers_start_at_zero() -> None:
    assert Chunk(job_id="j", seq=0, delta="Hi").seq == 0
    with pytest.raises(ValidationError, match="seq"):
        Chunk(job_id="j", seq=-1, delta="Hi")


def test_only_succeeded_failed_and_cancelled_are_terminal() -> None:
    terminal = {status for status in JobStatus if status.is_terminal}
    assert terminal == {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


def test_success_rate_is_a_percentage_and_zero_without_requests() -> None:
    assert Stats().success_rate() == 0.0
    assert Stats(total_requests=4, successful_requests=3, failed_requests=1).success_rate() == 75.0
    assert VendorStats().success_rate() == 0.0
    assert VendorStats(requests=8, successes=2, failures=6).success_rate() == 25.0


def test_route_lists_its_deployments_primary_first() -> None:
    route = Route(
        vendor="openai",
        model="gpt-4o",
        fallbacks=[Deployment(vendor="anthropic", model="claude-3-5-sonnet")],
        queue="llm.openai",
    )
    assert route.deployments == [
        Deployment(vendor="openai", model="gpt-4o"),
        Deployment(vendor="anthropic", model="claude-3-5-sonnet"),
    ]


# --- hostile input: extra_body, names, text, strict types ----------------------------------


def request_problems(**fields: Any) -> list[tuple[str, str]]:
    """(path, message) of each problem the request has."""
    base: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(ValidationError) as caught:
        Request.model_validate({**base, **fields})
    return [(".".join(map(str, e["loc"])), e["msg"]) for e in caught.value.errors()]


@pytest.mark.parametrize(
    ("extra_body", "named"),
    [
        ({"model": "other"}, "'model'"),
        ({"messages": [{"role": "user", "content": "x"}]}, "'messages'"),
        ({"stream": True}, "'stream'"),
        ({"max_tokens": 5, "max_completion_tokens": 5}, "'max_completion_tokens', 'max_tokens'"),
        (
            {"generationConfig": {"maxOutputTokens": 9, "topK": 40}},
            "'generationConfig.maxOutputTokens'",
        ),
        ({"options": {"num_predict": 9}}, "'options.num_predict'"),
    ],
)
def test_extra_body_may_not_set_a_field_the_dispatcher_writes(
    extra_body: dict[str, Any], named: str
) -> None:
    [(path, message)] = request_problems(extra_body=extra_body)
    assert path == "extra_body"
    assert f"may not set {named}" in message


def test_extra_body_may_set_what_we_do_not_model() -> None:
    extra = {"logit_bias": {"50256": -100}, "generationConfig": {"topK": 40}, "keep_alive": "5m"}
    request = Request(
        model="gpt-4o", messages=[Message(role="user", content="hi")], extra_body=extra
    )
    assert request.extra_body == extra


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"model": "gpt-4o\r\nX-Injected: 1"}, "model"),
        ({"model": "gpt\x1b[31m"}, "model"),
        ({"user": "alice\nbob"}, "user"),
        ({"metadata": {"k\x00ey": "v"}}, "metadata"),
        ({"metadata": {"key\ud800": "v"}}, "metadata"),
        ({"metadata": {"key": "v\ud800"}}, "metadata"),
        ({"messages": [{"role": "user", "content": "hi \udfff"}]}, "messages.0.content"),
    ],
)
def test_control_characters_in_names_and_lone_surrogates_anywhere_are_refused(
    fields: dict[str, Any], path: str
) -> None:
    [(where, message)] = request_problems(**fields)
    assert where.startswith(path)
    # Ours, or pydantic's own words for text that is not valid Unicode.
    assert any(
        words in message
        for words in ("control character", "lone surrogate", "unable to parse raw data")
    ), message


def test_text_keeps_its_newlines_and_tabs() -> None:
    message = Message(role="user", content="line one\n\tline two")
    assert message.content == "line one\n\tline two"


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"temperature": True}, "temperature"),
        ({"priority": "9"}, "priority"),
        ({"priority": 9.0}, "priority"),
        ({"max_tokens": "100"}, "max_tokens"),
        ({"stream": 1}, "stream"),
        ({"allow_fallback": "false"}, "allow_fallback"),
        ({"timeout_s": "30"}, "timeout_s"),
    ],
)
def test_numbers_and_booleans_are_not_coerced(fields: dict[str, Any], path: str) -> None:
    [(where, _)] = request_problems(**fields)
    assert where == path
