"""The built-in price table: the vendors' list prices, shipped in `prices.json`.

The file holds, per vendor family, each current model's USD per million input,
cached input and output tokens, with the date they were read and the pages
they were read from. It is parsed and validated once, on first use.

A model is looked up by its exact name first; failing that, a dated snapshot
is priced as the model it is a snapshot of: one trailing `-YYYY-MM-DD`
(OpenAI), `-YYYYMMDD` (Anthropic), `-MM-YYYY` (Cohere) or `-latest` is dropped
and the rest looked up exactly (`gpt-4o-mini-2024-07-18` costs what
`gpt-4o-mini` costs). A snapshot priced differently has an entry of its own,
which the exact lookup finds first. Nothing else is guessed: a model the table
does not name is unpriced.

A Bedrock model id is normalised first (`bedrock_model_key`): Claude is priced
by the `anthropic` family, every other model by the `bedrock` family.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import date
from importlib import resources
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from dispatcher.config.schema import Price, VendorType
from dispatcher.models import StrictModel

__all__ = [
    "FAMILY_OF_TYPE",
    "FamilyPrices",
    "ModelRates",
    "PriceTable",
    "bedrock_model_key",
    "builtin_price",
    "load_price_table",
    "snapshot_base",
]

PRICES_FILE = "prices.json"

# The wire formats whose models the table prices, and the family whose list they use:
# Azure and OpenAI-compatible servers name OpenAI's models by OpenAI's names;
# Bedrock's Claude ids are priced by the anthropic family (`bedrock_model_key`).
FAMILY_OF_TYPE: dict[str, str] = {
    VendorType.OPENAI.value: "openai",
    VendorType.AZURE.value: "openai",
    VendorType.OPENAI_COMPATIBLE.value: "openai",
    VendorType.ANTHROPIC.value: "anthropic",
    VendorType.GEMINI.value: "google",
    VendorType.COHERE.value: "cohere",
    VendorType.BEDROCK.value: "bedrock",
}

# A dated snapshot's suffix: -2024-07-18 (OpenAI), -20250514 (Anthropic),
# -08-2024 (Cohere), or Anthropic's -latest alias.
_SNAPSHOT_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{2}-\d{4}|latest)$")

# A Bedrock cross-region inference profile's prefix: `us.amazon.nova-pro-v1:0`.
_BEDROCK_REGION_PREFIXES = frozenset({"us", "eu", "apac", "global", "jp", "au", "ca", "us-gov"})
# A Bedrock id's version and context suffixes: -v1:0, -v2, :0, -v1:0:200k.
_BEDROCK_VERSION_SUFFIX = re.compile(r"(?:-v\d+)?(?::\d+k?)*$")
# ARN resource types that name no foundation model: an application inference
# profile's id is opaque, and provisioned throughput is billed by the hour.
_BEDROCK_UNNAMED_RESOURCES = frozenset({"application-inference-profile", "provisioned-model"})
_ANTHROPIC_PREFIX = "anthropic."


class ModelRates(StrictModel):
    """One model's list prices in USD per million tokens."""

    model_config = ConfigDict(frozen=True)

    input: float = Field(gt=0.0)
    cached_input: float = Field(gt=0.0, description="Prompt tokens served from the cache.")
    output: float = Field(gt=0.0)

    @model_validator(mode="after")
    def _cached_is_no_dearer(self) -> ModelRates:
        if self.cached_input > self.input:
            raise ValueError(f"cached_input {self.cached_input} is above input {self.input}")
        return self

    def price(self) -> Price:
        """These rates as the `Price` cost is computed with."""
        return Price(
            input_per_mtok=self.input,
            cached_input_per_mtok=self.cached_input,
            output_per_mtok=self.output,
        )


class FamilyPrices(StrictModel):
    """One vendor family's models, and where their prices were read."""

    model_config = ConfigDict(frozen=True)

    sources: list[Annotated[str, StringConstraints(pattern=r"^https://")]] = Field(min_length=1)
    note: str = ""
    models: dict[Annotated[str, StringConstraints(min_length=1)], ModelRates] = Field(min_length=1)


class PriceTable(StrictModel):
    """The whole file: when the prices were read, their unit, and each family's models."""

    model_config = ConfigDict(frozen=True)

    source_date: date
    unit: str
    families: dict[str, FamilyPrices]


@functools.cache
def load_price_table() -> PriceTable:
    """The built-in table, read from the package and validated once."""
    text = resources.files("dispatcher.routing").joinpath(PRICES_FILE).read_text(encoding="utf-8")
    return PriceTable.model_validate(json.loads(text))


def snapshot_base(model: str) -> str | None:
    """The model a dated snapshot (or `-latest` alias) names, or None when `model` is not one."""
    base = _SNAPSHOT_SUFFIX.sub("", model)
    return base if base != model else None


def bedrock_model_key(model: str) -> tuple[str, str] | None:
    """The price family and table key a Bedrock model id names, or None when it names none.

    An ARN is cut to its resource name (after the last `/`); an application
    inference profile or provisioned model names no model, so it is None. Then
    one cross-region prefix (`us.`, `eu.`, `apac.`, `global.`, `jp.`, `au.`,
    `ca.`, `us-gov.`) and the version and context suffixes (`-v1:0`, `-v1`,
    `:200k`) are dropped. Claude (`anthropic.<model>`) is priced by the
    `anthropic` family, as its dated snapshot's model (`claude-sonnet-4-5`);
    any other id by the `bedrock` family as it stands (`amazon.nova-pro`).
    """
    name = model
    if name.startswith("arn:"):
        parts = name.split(":", 5)
        if len(parts) < 6 or "/" not in parts[5]:
            return None
        kind, _, resource = parts[5].partition("/")
        if kind in _BEDROCK_UNNAMED_RESOURCES:
            return None
        name = resource.rsplit("/", 1)[-1]
    prefix, dot, rest = name.partition(".")
    if dot and prefix in _BEDROCK_REGION_PREFIXES:
        name = rest
    name = _BEDROCK_VERSION_SUFFIX.sub("", name, count=1)
    if name.startswith(_ANTHROPIC_PREFIX):
        claude = name.removeprefix(_ANTHROPIC_PREFIX)
        return ("anthropic", snapshot_base(claude) or claude) if claude else None
    return ("bedrock", name) if name else None


@functools.lru_cache(maxsize=1024)
def builtin_price(vendor_type: str, model: str) -> Price | None:
    """The built-in price of `model` on a vendor of `vendor_type`, or None when unpriced."""
    if vendor_type == VendorType.BEDROCK.value:
        key = bedrock_model_key(model)
    else:
        found = FAMILY_OF_TYPE.get(vendor_type)
        key = (found, model) if found is not None else None
    if key is None:
        return None
    family, name = key
    prices = load_price_table().families.get(family)
    if prices is None:
        return None
    rates = prices.models.get(name)
    if rates is None:
        base = snapshot_base(name)
        rates = prices.models.get(base) if base is not None else None
    return rates.price() if rates is not None else None
