"""Building vendors by type, and adding custom vendors without forking."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dispatcher import ConfigError, Request, Settings, VendorConfig
from dispatcher.vendors import build_vendor, register_vendor, registered_types
from dispatcher.vendors.openai import OpenAIVendor
from tests.unit.vendors.custom_vendor import ShoutingVendor, make_shouting_vendor

BUILTIN = {
    "openai",
    "azure",
    "anthropic",
    "gemini",
    "ollama",
    "cohere",
    "openai_compatible",
    "mock",
}


def test_every_builtin_type_can_be_built() -> None:
    assert set(registered_types()) >= BUILTIN


def test_build_vendor_uses_the_configured_type() -> None:
    vendor = build_vendor("primary", VendorConfig(type="openai"))
    assert isinstance(vendor, OpenAIVendor)
    assert vendor.name == "primary"


async def test_a_registered_factory_builds_a_custom_type(
    make_request: Callable[..., Request],
) -> None:
    with pytest.raises(ValueError, match="custom factory"):
        VendorConfig(type="shouting")
    register_vendor("shouting", make_shouting_vendor)
    vendor = build_vendor("loud", VendorConfig(type="shouting"))
    assert isinstance(vendor, ShoutingVendor)
    assert (await vendor.complete(make_request())).content == "SAY HELLO."


async def test_a_factory_named_in_the_configuration_is_imported(
    make_request: Callable[..., Request],
) -> None:
    settings = Settings(
        vendors={"loud": VendorConfig(type="tests.unit.vendors.custom_vendor:make_shouting_vendor")}
    )
    vendor = build_vendor("loud", settings.vendors["loud"])
    assert isinstance(vendor, ShoutingVendor)
    deltas = [d async for d in vendor.stream(make_request())]
    assert "".join(d.text for d in deltas) == "SAY HELLO."


@pytest.mark.parametrize(
    ("type_name", "message"),
    [
        ("no_such_module_xyz:Factory", "cannot import 'no_such_module_xyz'"),
        ("tests.unit.vendors.custom_vendor:Missing", "has no callable 'Missing'"),
        ("tests.unit.vendors.custom_vendor:not_a_vendor", "did not return a Vendor"),
    ],
)
def test_a_bad_factory_is_a_clear_config_error(type_name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        build_vendor("custom", VendorConfig(type=type_name))
    assert "vendors.custom.type" in str(caught.value)


def test_register_vendor_refuses_a_non_callable() -> None:
    with pytest.raises(ValueError, match="callable"):
        register_vendor("broken", "not callable")  # type: ignore[arg-type]
