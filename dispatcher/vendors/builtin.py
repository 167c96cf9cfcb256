"""The vendor types we ship, by configuration type name."""

from __future__ import annotations

from dispatcher.vendors.openai import OpenAIVendor

__all__ = ["BUILTIN_FACTORIES"]

BUILTIN_FACTORIES = {
    "openai": OpenAIVendor,
}
