"""One contract for every wire format: each error status in a format's table becomes
the typed error the table names, naming the vendor and the status, never the key.

Each format's module keeps its own table (`ERRORS`: real error bodies, and the
error each must become) and its `vendor` builder; this module runs them all
through the same checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import httpx
import pytest
from _pytest.mark.structures import ParameterSet
from pydantic import SecretStr

from dispatcher.models import Request
from tests.unit.vendors import (
    test_anthropic,
    test_azure,
    test_bedrock,
    test_cohere,
    test_gemini,
    test_ollama,
    test_openai,
    test_openai_compatible,
)
from tests.unit.vendors.conftest import Recorder


def _plain(make_request: Callable[..., Request]) -> Request:
    return make_request()


@dataclass(frozen=True)
class WireFormat:
    """A format's test module, the name its vendor reports, and how to call it."""

    module: ModuleType
    name: str
    ask: Callable[[Callable[..., Request]], Request] = _plain
    call: dict[str, Any] = field(default_factory=dict)  # complete(request, **call)
    config: dict[str, Any] = field(default_factory=dict)  # vendor(recorder, **config)


FORMATS = [
    WireFormat(test_openai, "openai"),
    WireFormat(test_azure, "azure", call={"model": test_azure.DEPLOYMENT}),
    WireFormat(test_openai_compatible, "local"),
    WireFormat(test_anthropic, "anthropic", ask=test_anthropic.ask),
    WireFormat(test_gemini, "gemini", ask=test_gemini.gemini_request),
    WireFormat(test_cohere, "cohere", ask=test_cohere.cohere_request),
    WireFormat(test_ollama, "ollama", config={"api_key": SecretStr(test_ollama.KEY)}),
    WireFormat(test_bedrock, "bedrock", ask=test_bedrock.ask),
]


def error_cases() -> Iterator[ParameterSet]:
    for wire in FORMATS:
        for entry in wire.module.ERRORS:
            values = entry.values if isinstance(entry, ParameterSet) else entry
            response, expected = values
            label = f"{response.status_code}-{expected.__name__}"
            yield pytest.param(wire, response, expected, id=f"{wire.name}-{label}")


def test_every_format_has_a_table_of_errors() -> None:
    counts = {wire.name: len(wire.module.ERRORS) for wire in FORMATS}
    assert all(count >= 5 for count in counts.values()), counts


@pytest.mark.parametrize(("wire", "response", "expected"), list(error_cases()))
async def test_an_error_status_becomes_its_typed_error_naming_vendor_and_status_not_the_key(
    recorder: Callable[..., Recorder],
    make_request: Callable[..., Request],
    wire: WireFormat,
    response: httpx.Response,
    expected: type[Exception],
) -> None:
    vendor = wire.module.vendor(recorder(response), **wire.config)
    with pytest.raises(expected) as caught:
        await vendor.complete(wire.ask(make_request), **wire.call)
    error = caught.value
    assert type(error) is expected
    assert getattr(error, "vendor", None) == wire.name
    assert getattr(error, "status_code", None) == response.status_code
    text = str(error)
    assert text.startswith(f"{wire.name} ")  # the message says who answered
    assert f"status={response.status_code})" in text
    assert wire.module.KEY not in str(error)
