"""A model name can never change where a call goes: one escaped path segment, or the body.

For every wire format, a hostile name (`?`, `#`, `/`, `..`, `%`) must leave the
request's path, query and fragment exactly what the vendor's endpoint makes them.
"""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.config.schema import VendorConfig
from dispatcher.models import Message, Request
from dispatcher.vendors import build_vendor
from dispatcher.vendors.base import HttpVendor, path_segment

HOSTILE = [
    "gemini-x?key=zzz#frag",
    "gemini-../../v1/chat/completions",
    "..",
    ".",
    "a/b",
    "x%2Fy",
    "m#f",
]

# (type, extra config, the path the call takes with the model's segment as "{m}" or
# None when the model rides in the body, and the query every call carries)
FORMATS: list[tuple[str, dict[str, Any], str, dict[str, str]]] = [
    ("openai", {}, "/v1/chat/completions", {}),
    ("openai_compatible", {"base_url": "http://llm.test/v1"}, "/v1/chat/completions", {}),
    ("anthropic", {}, "/v1/messages", {}),
    ("gemini", {}, "/v1beta/models/{m}:generateContent", {}),
    ("cohere", {}, "/v2/chat", {}),
    ("ollama", {}, "/api/chat", {}),
    (
        "azure",
        {"base_url": "https://res.openai.azure.com"},
        "/openai/deployments/{m}/chat/completions",
        {"api-version": "2024-10-21"},
    ),
    (
        "azure",
        {"base_url": "https://res.openai.azure.com/openai/v1"},
        "/openai/v1/chat/completions",
        {},
    ),
]


def built(kind: str, extra: dict[str, Any], model: str) -> Any:
    vendor = build_vendor(kind, VendorConfig(type=kind, api_key="k-0123456789abcdef", **extra))
    assert isinstance(vendor, HttpVendor)
    request = Request(model=model, messages=[Message(role="user", content="hi")])
    return vendor.build_request(request, model, stream=False)


@pytest.mark.parametrize("model", HOSTILE)
@pytest.mark.parametrize(("kind", "extra", "path", "query"), FORMATS)
def test_a_hostile_model_name_stays_in_its_segment_or_the_body(
    kind: str, extra: dict[str, Any], path: str, query: dict[str, str], model: str
) -> None:
    request = built(kind, extra, model)

    expected = path.replace("{m}", path_segment(model))
    assert request.url.raw_path.decode("ascii").split("?")[0] == expected
    assert dict(request.url.params) == query
    assert request.url.fragment == ""
    if "{m}" not in path:
        assert model.encode() in request.content.replace(b"\\/", b"/"), "in the body"


@pytest.mark.parametrize(
    ("name", "segment"),
    [
        ("gpt-4o", "gpt-4o"),
        ("a/b", "a%2Fb"),
        ("x?key=1#f", "x%3Fkey%3D1%23f"),
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("v1..2", "v1..2"),
        ("50%", "50%25"),
    ],
)
def test_a_path_segment_escapes_every_reserved_character_and_bare_dots(
    name: str, segment: str
) -> None:
    assert path_segment(name) == segment
