"""The error tree: what each error tells a caller, and that no secret rides along."""

from __future__ import annotations

import pickle

import pytest

from dispatcher import errors
from dispatcher.errors import (
    BatchNotFound,
    BudgetExceeded,
    CircuitOpen,
    ConfigError,
    ContentFiltered,
    DeadlineExceeded,
    DispatcherError,
    InvalidRequest,
    InvalidVendorOutput,
    JobCancelled,
    JobNotFound,
    NoRoute,
    StoreUnavailable,
    StreamBroken,
    VendorAuthError,
    VendorNotFound,
    VendorQuotaExceeded,
    VendorRateLimited,
    VendorTimeout,
    VendorUnavailable,
    error_from_dict,
)
from dispatcher.redaction import register_secret

RETRYABLE = {
    VendorRateLimited,
    VendorUnavailable,
    StreamBroken,
    VendorTimeout,
    CircuitOpen,
    StoreUnavailable,
}
FINAL = {
    DeadlineExceeded,
    VendorAuthError,
    VendorQuotaExceeded,
    ContentFiltered,
    InvalidRequest,
    InvalidVendorOutput,
    NoRoute,
    BudgetExceeded,
    JobNotFound,
    BatchNotFound,
    VendorNotFound,
    JobCancelled,
    ConfigError,
}

SAMPLES: list[DispatcherError] = [
    VendorRateLimited("slow down", retry_after_s=2.5, vendor="openai", job_id="j1"),
    VendorUnavailable("overloaded", vendor="anthropic", status_code=529),
    StreamBroken("stream ended before message_stop", partial=True, vendor="anthropic"),
    VendorTimeout("read timed out after 30 s", vendor="gemini"),
    DeadlineExceeded("the job's deadline (5 s after submit) passed during its call", vendor="x"),
    CircuitOpen("circuit open", vendor="cohere"),
    VendorAuthError("invalid key", vendor="openai", status_code=401),
    VendorQuotaExceeded("insufficient_quota", vendor="openai", status_code=429),
    ContentFiltered("prompt refused", vendor="azure", status_code=400),
    InvalidVendorOutput("the reply is not JSON", raw_text="Sure! {'a': 1}", vendor="openai"),
    InvalidRequest("max_tokens too large", vendor="openai", status_code=400),
    NoRoute("no vendor can take model 'x'", reasons={"openai": "disabled", "azure": "unhealthy"}),
    BudgetExceeded("too expensive", estimated_cost_usd=0.2, max_cost_usd=0.1),
    JobNotFound("no job 'abc'", job_id="abc"),
    BatchNotFound("no batch 'abc'"),
    VendorNotFound("no vendor 'x' is configured (configured: openai)", vendor="x"),
    JobCancelled("job 'abc' was cancelled", job_id="abc"),
    StoreUnavailable("Redis at redis://127.0.0.1:6379/0 is unreachable (ConnectionError: refused)"),
    ConfigError(["vendors.openai.rpm: must be greater than 0", "default_vendor: unknown"]),
]


def test_every_error_class_has_a_sample_and_is_retryable_or_final() -> None:
    classes = {cls for cls in vars(errors).values() if isinstance(cls, type)}
    leaves = {cls for cls in classes if issubclass(cls, DispatcherError)} - {DispatcherError}
    assert leaves == RETRYABLE | FINAL
    assert {type(sample) for sample in SAMPLES} == leaves


@pytest.mark.parametrize("cls", sorted(RETRYABLE, key=lambda c: c.__name__))
def test_transient_errors_are_retryable(cls: type[DispatcherError]) -> None:
    assert cls.retryable is True


@pytest.mark.parametrize("cls", sorted(FINAL, key=lambda c: c.__name__))
def test_errors_that_need_a_fix_are_final(cls: type[DispatcherError]) -> None:
    assert cls.retryable is False


def test_errors_can_be_caught_by_their_python_meaning() -> None:
    assert issubclass(InvalidRequest, ValueError)
    assert issubclass(ConfigError, ValueError)
    assert issubclass(JobNotFound, LookupError)
    assert issubclass(VendorNotFound, LookupError)


def test_an_error_carries_vendor_status_and_job_and_shows_them() -> None:
    error = VendorUnavailable("overloaded", vendor="anthropic", status_code=529, job_id="j9")
    assert (error.vendor, error.status_code, error.job_id) == ("anthropic", 529, "j9")
    assert str(error) == "overloaded (vendor=anthropic, status=529, job=j9)"


def test_rate_limited_defaults_to_status_429_and_keeps_retry_after() -> None:
    error = VendorRateLimited("slow down", retry_after_s=1.5)
    assert error.status_code == 429
    assert error.retry_after_s == 1.5


def test_a_negative_retry_after_is_refused() -> None:
    with pytest.raises(ValueError, match="retry_after_s"):
        VendorRateLimited("slow down", retry_after_s=-1)


def test_no_route_lists_each_vendors_reason() -> None:
    error = NoRoute("no vendor can take model 'x'", reasons={"b": "disabled", "a": "unhealthy"})
    assert str(error) == "no vendor can take model 'x': a: unhealthy; b: disabled"


def test_config_error_lists_every_problem_under_a_count() -> None:
    error = ConfigError(["a: must be set", "b: must be greater than 0"])
    assert str(error).splitlines() == [
        "invalid configuration (2 problems):",
        "  a: must be set",
        "  b: must be greater than 0",
    ]


@pytest.mark.parametrize("error", SAMPLES, ids=lambda e: type(e).__name__)
def test_error_round_trips_through_its_dict_form(error: DispatcherError) -> None:
    rebuilt = error_from_dict(error.to_dict())
    assert type(rebuilt) is type(error)
    assert rebuilt.to_dict() == error.to_dict()
    assert str(rebuilt) == str(error)


@pytest.mark.parametrize("error", SAMPLES, ids=lambda e: type(e).__name__)
def test_error_survives_pickling(error: DispatcherError) -> None:
    rebuilt = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert type(rebuilt) is type(error)
    assert rebuilt.to_dict() == error.to_dict()


def test_an_unknown_kind_becomes_a_plain_dispatcher_error() -> None:
    rebuilt = error_from_dict({"kind": "from_the_future", "message": "?"})
    assert type(rebuilt) is DispatcherError
    assert rebuilt.message == "?"


def test_a_registered_secret_never_appears_in_an_error_message() -> None:
    secret = "sk-proj-registered-secret-0001"
    register_secret(secret)
    error = VendorAuthError(f"Incorrect API key provided: {secret}", vendor="openai")
    assert secret not in str(error)
    assert secret not in repr(error)
    assert secret not in str(error.to_dict())


def test_a_key_echoed_in_a_vendor_body_is_masked_even_if_never_registered() -> None:
    body = '{"error": "bad request", "headers": {"x-api-key": "ant-api03-unregistered99"}}'
    error = InvalidRequest(f"vendor said: {body}", vendor="anthropic", status_code=400)
    assert "ant-api03-unregistered99" not in str(error)


def test_config_problems_are_redacted_too() -> None:
    secret = "registered-config-secret-77"
    register_secret(secret)
    error = ConfigError([f"vendors.x.headers.Authorization: bad value {secret}"])
    assert secret not in str(error)
    assert all(secret not in problem for problem in error.problems)


def _drawn_tree() -> dict[str, tuple[str, str, str]]:
    """The tree drawn in `dispatcher.errors`' docstring: name -> (parent, extra base, note)."""
    doc = errors.__doc__ or ""
    drawing = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    root = drawing[0].split()[0]
    drawn: dict[str, tuple[str, str, str]] = {}
    parents = [root]
    for line in drawing[1:]:
        branch = line.index("── ")
        depth = (branch - 4) // 4  # 4 spaces of indent, then 4 characters per level
        name, _, rest = line[branch + 3 :].partition(" ")
        rest = rest.strip()
        extra = ""
        if rest.startswith("("):
            extra, _, rest = rest[1:].partition(")")
        del parents[depth + 1 :]
        drawn[name] = (parents[depth], extra, rest.strip())
        parents.append(name)
    return drawn


def test_the_docstrings_tree_is_the_class_tree_with_each_ones_verdict() -> None:
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, DispatcherError) and cls is not DispatcherError
    }
    drawn = _drawn_tree()

    assert set(drawn) == set(classes)
    for name, (parent, extra, note) in drawn.items():
        cls = classes[name]
        ours = [b.__name__ for b in cls.__bases__ if issubclass(b, DispatcherError)]
        builtins = [b.__name__ for b in cls.__bases__ if not issubclass(b, DispatcherError)]
        assert ours == [parent], name
        assert builtins == ([extra] if extra else []), name
        assert note.startswith("final") != cls.retryable, f"{name}: {note!r}"


def test_invalid_vendor_output_keeps_the_raw_text_through_its_dict_form() -> None:
    error = InvalidVendorOutput("not JSON", raw_text='{"city": "Par', vendor="openai")
    rebuilt = error_from_dict(error.to_dict())
    assert isinstance(rebuilt, InvalidVendorOutput)
    assert rebuilt.raw_text == '{"city": "Par'
    assert (rebuilt.kind, rebuilt.retryable) == ("invalid_output", False)
