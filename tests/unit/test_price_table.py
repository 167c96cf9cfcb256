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
    bedrock_model_key,
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
        ("bedrock", "amazon.nova-micro"),
        ("bedrock", "amazon.nova-lite"),
        ("bedrock", "amazon.nova-pro"),
        ("bedrock", "amazon.nova-premier"),
        ("bedrock", "meta.llama3-3-70b-instruct"),
        ("bedrock", "meta.llama3-1-70b-instruct"),
        ("bedrock", "meta.llama3-1-8b-instruct"),
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


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("amazon.nova-pro-v1:0", ("bedrock", "amazon.nova-pro")),
        ("meta.llama3-3-70b-instruct-v1:0", ("bedrock", "meta.llama3-3-70b-instruct")),
        ("amazon.titan-text-express-v1", ("bedrock", "amazon.titan-text-express")),
        ("amazon.nova-pro-v1:0:300k", ("bedrock", "amazon.nova-pro")),
        ("amazon.nova-pro", ("bedrock", "amazon.nova-pro")),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", ("anthropic", "claude-sonnet-4-5")),
        ("anthropic.claude-3-sonnet-20240229-v1:0:200k", ("anthropic", "claude-3-sonnet")),
        ("anthropic.claude-sonnet-4-6", ("anthropic", "claude-sonnet-4-6")),
        ("us.amazon.nova-pro-v1:0", ("bedrock", "amazon.nova-pro")),
        ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", ("anthropic", "claude-sonnet-4-5")),
        ("apac.amazon.nova-lite-v1:0", ("bedrock", "amazon.nova-lite")),
        ("global.anthropic.claude-haiku-4-5-20251001-v1:0", ("anthropic", "claude-haiku-4-5")),
        ("jp.anthropic.claude-sonnet-4-5-20250929-v1:0", ("anthropic", "claude-sonnet-4-5")),
        ("au.amazon.nova-micro-v1:0", ("bedrock", "amazon.nova-micro")),
        ("ca.amazon.nova-lite-v1:0", ("bedrock", "amazon.nova-lite")),
        ("us-gov.meta.llama3-1-8b-instruct-v1:0", ("bedrock", "meta.llama3-1-8b-instruct")),
        (
            "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0",
            ("bedrock", "amazon.nova-pro"),
        ),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            ("anthropic", "claude-sonnet-4-5"),
        ),
        ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123", None),
        ("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123", None),
        ("arn:aws:bedrock:us-east-1", None),  # an ARN that names no resource
        ("", None),
    ],
)
def test_a_bedrock_model_id_is_normalised_to_its_family_and_table_key(
    model: str, key: tuple[str, str] | None
) -> None:
    assert bedrock_model_key(model) == key


@pytest.mark.parametrize(
    ("model", "price"),
    [
        (
            "us.amazon.nova-pro-v1:0",
            Price(input_per_mtok=0.8, cached_input_per_mtok=0.2, output_per_mtok=3.2),
        ),
        (
            "amazon.nova-micro-v1:0",
            Price(input_per_mtok=0.035, cached_input_per_mtok=0.00875, output_per_mtok=0.14),
        ),
        (
            "meta.llama3-3-70b-instruct-v1:0",
            Price(input_per_mtok=0.72, cached_input_per_mtok=0.72, output_per_mtok=0.72),
        ),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
            "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
            Price(input_per_mtok=3.0, cached_input_per_mtok=0.3, output_per_mtok=15.0),
        ),
        (
            "anthropic.claude-haiku-4-5-20251001-v1:0",
            Price(input_per_mtok=1.0, cached_input_per_mtok=0.1, output_per_mtok=5.0),
        ),
    ],
)
def test_bedrock_prices_nova_and_llama_by_its_family_and_claude_by_anthropics(
    model: str, price: Price
) -> None:
    assert builtin_price("bedrock", model) == price
    assert price_for(VendorConfig(type="bedrock"), model) == price


@pytest.mark.parametrize(
    "model",
    [
        "amazon.nova-canvas-v1:0",  # a model the table does not name
        "cohere.command-r-plus-v1:0",  # Cohere on Bedrock is not Cohere's own price list
        "anthropic.claude-v2:1",  # an old Claude the anthropic family does not name
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123",
    ],
)
def test_no_price_is_guessed_for_a_bedrock_model_the_table_does_not_name(model: str) -> None:
    assert builtin_price("bedrock", model) is None


def test_a_bedrock_id_is_normalised_only_on_a_bedrock_vendor() -> None:
    assert builtin_price("anthropic", "anthropic.claude-sonnet-4-5-20250929-v1:0") is None
    assert builtin_price("openai", "amazon.nova-pro-v1:0") is None
