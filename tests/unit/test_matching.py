"""Which vendors serve a model, and which requests a routing rule's condition takes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dispatcher.config.policies import RoutingCondition
from dispatcher.config.schema import VendorConfig
from dispatcher.models import Request
from dispatcher.routing.matching import condition_matches, serves


def test_vendor_serves_only_its_explicit_glob_patterns() -> None:
    vendor = VendorConfig(type="openai_compatible", models=["llama3*", "mistral-7b"])

    assert serves(vendor, "llama3-70b")
    assert serves(vendor, "mistral-7b")
    assert not serves(vendor, "mistral-7b-instruct")
    assert not serves(vendor, "gpt-4o")


@pytest.mark.parametrize(
    ("vendor_type", "served", "not_served"),
    [
        ("anthropic", "claude-3-5-sonnet-latest", "gpt-4o"),
        ("openai", "gpt-4o-mini", "claude-3-opus"),
        ("openai", "o1-preview", "gemini-1.5-pro"),
        ("gemini", "gemini-1.5-pro", "claude-3-opus"),
        ("cohere", "command-r-plus", "gpt-4o"),
    ],
)
def test_a_first_party_vendor_without_models_serves_its_default_patterns(
    vendor_type: str, served: str, not_served: str
) -> None:
    vendor = VendorConfig(type=vendor_type)

    assert serves(vendor, served)
    assert not serves(vendor, not_served)


@pytest.mark.parametrize("vendor_type", ["openai_compatible", "mock", "ollama", "azure"])
def test_a_vendor_type_without_default_patterns_serves_any_model(vendor_type: str) -> None:
    vendor = VendorConfig(type=vendor_type)

    assert vendor.model_patterns() == ()
    assert serves(vendor, "claude-3-opus")
    assert serves(vendor, "some-local-model")


@pytest.mark.parametrize(
    ("condition", "request_fields", "expected"),
    [
        ({}, {}, True),
        ({"model_pattern": "gpt-4*"}, {"model": "gpt-4o"}, True),
        ({"model_pattern": "gpt-4*"}, {"model": "claude-3-opus"}, False),
        ({"max_tokens": 100}, {"max_tokens": 100}, True),
        ({"max_tokens": 100}, {"max_tokens": 101}, False),
        ({"max_tokens": 100}, {}, False),
        ({"temperature": 0.5}, {"temperature": 0.2}, True),
        ({"temperature": 0.5}, {"temperature": 0.9}, False),
        ({"temperature": 0.5}, {}, False),
        ({"user": "team-*"}, {"user": "team-search"}, True),
        ({"user": "team-*"}, {"user": "other"}, False),
        ({"user": "team-*"}, {}, False),
        ({"model_pattern": "gpt-*", "max_tokens": 50}, {"model": "gpt-4o", "max_tokens": 10}, True),
        (
            {"model_pattern": "gpt-*", "max_tokens": 50},
            {"model": "gpt-4o", "max_tokens": 99},
            False,
        ),
    ],
)
def test_routing_condition_matches_only_when_every_given_condition_holds(
    condition: dict[str, Any],
    request_fields: dict[str, Any],
    expected: bool,
    make_request: Callable[..., Request],
) -> None:
    assert (
        condition_matches(RoutingCondition(**condition), make_request(**request_fields)) is expected
    )
