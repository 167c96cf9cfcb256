"""The built-in price table: the data file parses, is dated, and is looked up by a plain rule."""

from __future__ import annotations

import json
import tomllib
from datetime import date
from importlib import resources
from pathlib import Path

import pytest

from dispatcher import Price, VendorConfig
from dispatcher.routing.price_table import (
    FAMILY_OF_TYPE,
    PRICES_FILE,
    builtin_price,
    load_price_table,
    snapshot_base,
)
from dispatcher.routing.pricing import price_for

REPO = Path(__file__).resolve().parents[2]

ENTRIES = [
    (family, model, rates)
    for family, prices in load_price_table().families.items()
    for model, rates in prices.models.items()
]


def test_the_table_says_when_its_prices_were_read_and_from_where() -> None:
    raw = json.loads(resources.files("dispatcher.routing").joinpath(PRICES_FILE).read_text())
    table = load_price_table()

    assert raw["source_date"] == table.source_date.isoformat()
    assert date(2026, 1, 1) <= table.source_date <= date.today()
    assert "per million tokens" in table.unit
    for prices in table.families.values():
        assert prices.sources
        assert all(url.startswith("https://") for url in prices.sources)


@pytest.mark.parametrize(("family", "model", "rates"), ENTRIES, ids=lambda e: str(e)[:40])
def test_every_entry_parses_with_positive_rates_and_cached_no_dearer_than_input(
    family: str, model: str, rates: object
) -> None:
    raw = json.loads(resources.files("dispatcher.routing").joinpath(PRICES_FILE).read_text())
    entry = raw["families"][family]["models"][model]

    assert set(entry) == {"input", "cached_input", "output"}
    assert all(isinstance(value, int | float) and value > 0 for value in entry.values())
    assert entry["cached_input"] <= entry["input"]
    assert load_price_table().families[family].models[model] == rates


def test_every_family_of_the_table_is_used_by_a_vendor_type_and_the_reverse() -> None:
    assert set(FAMILY_OF_TYPE.values()) == set(load_price_table().families)


@pytest.mark.parametrize(
    ("family", "model"),
    [
        ("openai", "gpt-4o"),
        ("openai", "gpt-4o-mini"),
        ("openai", "gpt-4.1"),
        ("openai", "gpt-4.1-mini"),
        ("openai", "gpt-4.1-nano"),
        ("openai", "o3"),
        ("openai", "o4-mini"),
        ("anthropic", "claude-opus-4-5"),
        ("anthropic", "claude-sonnet-4-5"),
        ("anthropic", "claude-haiku-4-5"),
        ("google", "gemini-2.5-pro"),
        ("google", "gemini-2.5-flash"),
        ("google", "gemini-2.5-flash-lite"),
        ("cohere", "command-a-03-2025"),
        ("cohere", "command-r-08-2024"),
        ("cohere", "command-r-plus-08-2024"),
    ],
)
def test_the_table_prices_the_current_models(family: str, model: str) -> None:
    assert model in load_price_table().families[family].models


def test_the_data_file_ships_in_the_package() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))

    assert f"routing/{PRICES_FILE}" in pyproject["tool"]["setuptools"]["package-data"]["dispatcher"]


@pytest.mark.parametrize(
    ("model", "base"),
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("command-a-03-2025", "command-a"),
        ("gpt-4o-mini", None),
        ("claude-opus-4-1", None),
        ("gemini-2.5-flash-preview-05-20", None),
    ],
)
def test_a_dated_snapshot_names_the_model_it_is_a_snapshot_of(model: str, base: str | None) -> None:
    assert snapshot_base(model) == base


def test_a_snapshot_costs_what_its_model_costs_unless_it_has_an_entry_of_its_own() -> None:
    assert builtin_price("openai", "gpt-4o-mini-2024-07-18") == builtin_price(
        "openai", "gpt-4o-mini"
    )
    assert builtin_price("anthropic", "claude-haiku-4-5-20251001") == Price(
        input_per_mtok=1.0, cached_input_per_mtok=0.1, output_per_mtok=5.0
    )
    assert builtin_price("openai", "gpt-4o-2024-05-13") == Price(
        input_per_mtok=5.0, cached_input_per_mtok=5.0, output_per_mtok=15.0
    )


@pytest.mark.parametrize(
    ("vendor_type", "model"),
    [
        ("openai", "gpt-4o-mini-high"),  # near a known name, but not one
        ("openai", "claude-haiku-4-5"),  # another family's model
        ("ollama", "gpt-4o-mini"),  # a type the table does not cover
        ("mock", "gpt-4o-mini"),
        ("mypkg.vendors:Factory", "gpt-4o-mini"),
        ("gemini", "gemini-2.5-flash-preview-05-20"),  # previews are not snapshots
    ],
)
def test_no_price_is_guessed_for_a_model_the_table_does_not_name(
    vendor_type: str, model: str
) -> None:
    assert builtin_price(vendor_type, model) is None


@pytest.mark.parametrize("vendor_type", ["openai", "azure", "openai_compatible"])
def test_azure_and_openai_compatible_vendors_use_openais_prices(vendor_type: str) -> None:
    extra = {"base_url": "https://llm.example.com/v1"} if vendor_type != "openai" else {}
    vendor = VendorConfig(type=vendor_type, **extra)

    assert price_for(vendor, "gpt-4.1-nano") == Price(
        input_per_mtok=0.1, cached_input_per_mtok=0.025, output_per_mtok=0.4
    )


def test_type_google_uses_the_google_family() -> None:
    assert price_for(VendorConfig(type="google"), "gemini-2.5-flash") == Price(
        input_per_mtok=0.3, cached_input_per_mtok=0.03, output_per_mtok=2.5
    )
