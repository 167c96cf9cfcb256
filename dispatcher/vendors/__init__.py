"""Vendor clients: one module per wire format, all behind the `Vendor` interface."""

from dispatcher.vendors.base import (
    Completion,
    Health,
    HttpVendor,
    StreamDelta,
    StreamParser,
    Vendor,
)
from dispatcher.vendors.registry import (
    build_vendor,
    register_vendor,
    registered_types,
    unbuildable_vendors,
)

__all__ = [
    "Completion",
    "Health",
    "HttpVendor",
    "StreamDelta",
    "StreamParser",
    "Vendor",
    "build_vendor",
    "register_vendor",
    "registered_types",
    "unbuildable_vendors",
]
