"""Which class speaks each vendor type, and how users add their own without forking.

`register_vendor("mytype", factory)` makes `type: mytype` usable in the
configuration; `type: "package.module:Factory"` imports the factory on first
use. A factory is called as `factory(name, config, client)` and returns a
`Vendor`; `client` is the pooled `httpx.AsyncClient` to use, or None.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping

import httpx

from dispatcher.config.schema import CUSTOM_TYPE_PATTERN, VendorConfig, allow_vendor_type
from dispatcher.errors import ConfigError
from dispatcher.vendors.base import Vendor

__all__ = [
    "VendorFactory",
    "build_vendor",
    "register_vendor",
    "registered_types",
    "unbuildable_vendors",
    "vendor_factory",
]

VendorFactory = Callable[[str, VendorConfig, httpx.AsyncClient | None], Vendor]

_lock = threading.Lock()
_factories: dict[str, VendorFactory] = {}


def register_vendor(type_name: str, factory: VendorFactory) -> None:
    """Make `type: <type_name>` in the configuration build vendors with `factory`."""
    if not type_name or not callable(factory):
        raise ValueError("register_vendor needs a type name and a callable factory")
    with _lock:
        _factories[type_name] = factory
    allow_vendor_type(type_name)


def registered_types() -> list[str]:
    """The vendor types that can be built, sorted."""
    _register_builtins()
    return sorted(_factories)


def build_vendor(
    name: str, config: VendorConfig, client: httpx.AsyncClient | None = None
) -> Vendor:
    """The vendor object for a configured vendor.

    Raises:
        ConfigError: the type is neither registered nor an importable factory.
    """
    vendor = vendor_factory(name, config)(name, config, client)
    if not isinstance(vendor, Vendor):
        raise ConfigError([f"vendors.{name}.type: factory {config.type!r} did not return a Vendor"])
    return vendor


def vendor_factory(name: str, config: VendorConfig) -> VendorFactory:
    """The factory of vendor `name`'s type: registered, built in, or imported now.

    Raises:
        ConfigError: the type is neither registered nor an importable factory.
    """
    _register_builtins()
    return _factories.get(config.type) or _import_factory(name, config.type)


def unbuildable_vendors(vendors: Mapping[str, VendorConfig]) -> list[str]:
    """The problem of each of `vendors` whose factory cannot be found or imported.

    For start-up checks (`config check`, a starting worker): a custom factory that
    cannot be imported is a configuration error, found before anything says ready.
    """
    problems = []
    for name, config in vendors.items():
        try:
            vendor_factory(name, config)
        except ConfigError as exc:
            problems += exc.problems
    return problems


def _import_factory(name: str, type_name: str) -> VendorFactory:
    where = f"vendors.{name}.type"
    if not CUSTOM_TYPE_PATTERN.match(type_name):
        raise ConfigError([f"{where}: no vendor type {type_name!r} is registered"])
    module_name, _, attribute = type_name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError([f"{where}: cannot import {module_name!r}: {exc}"]) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError([f"{where}: {module_name!r} has no callable {attribute!r}"])
    register_vendor(type_name, factory)
    return factory  # type: ignore[no-any-return]


def _register_builtins() -> None:
    # Imported here so that importing the registry does not import every wire format.
    from dispatcher.vendors.builtin import BUILTIN_FACTORIES  # noqa: PLC0415

    with _lock:
        for type_name, factory in BUILTIN_FACTORIES.items():
            _factories.setdefault(type_name, factory)
