"""What no one field's validator can see: vendor types implied by names, names that
point at no vendor, and endpoints a vendor type cannot do without.

`Settings` runs these over the merged raw data (file, environment, keyword
arguments) before validating it, so their problems are reported together with
every field's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core import InitErrorDetails

from dispatcher.config.problems import custom_error
from dispatcher.config.schema import TYPES_NEEDING_BASE_URL, VENDOR_TYPE_ALIASES, VendorType
from dispatcher.config.sources import ENV_VENDORS

__all__ = ["infer_vendor_types", "reference_problems"]


def infer_vendor_types(data: dict[str, Any]) -> dict[str, Any]:
    """A vendor named after a built-in type (`openai:`) needs no `type:` line."""
    vendors = data.get("vendors")
    if not isinstance(vendors, Mapping):
        return data
    known = {member.value for member in VendorType} | VENDOR_TYPE_ALIASES.keys()
    filled = {
        name: (
            {"type": name, **entry}
            if isinstance(entry, Mapping) and "type" not in entry and name in known
            else entry
        )
        for name, entry in vendors.items()
    }
    return {**data, "vendors": filled}


def reference_problems(
    data: Mapping[str, Any], env_names: Mapping[str, str]
) -> list[InitErrorDetails]:
    """Names that point at no vendor, and endpoints a vendor type cannot do without.

    `env_names` spells each environment-backed field as the environment does.
    """
    vendors = data.get("vendors")
    vendors = vendors if isinstance(vendors, Mapping) else {}
    # Mirrors Settings._complete_vendors_from_environment: env vendors only when the file
    # lists none.
    names = set(vendors) or {
        spec.name
        for spec in ENV_VENDORS
        if data.get(spec.key_field) or data.get(spec.base_url_field)
    }
    # A YAML key such as `off:` is a boolean: show names as text, never compare types.
    known = ", ".join(sorted(str(name) for name in names)) or "none"
    problems: list[InitErrorDetails] = []

    def check(name: Any, loc: tuple[int | str, ...]) -> None:
        if isinstance(name, str) and name not in names:
            problems.append(
                custom_error(
                    "unknown_vendor", loc, f"unknown vendor {name!r} (configured: {known})"
                )
            )

    for key in ("default_vendor", "fallback_vendor"):
        check(data.get(key), (key,))
    rules = data.get("routing_rules")
    for index, rule in enumerate(rules if isinstance(rules, list) else []):
        if isinstance(rule, Mapping):
            check(rule.get("vendor"), ("routing_rules", index, "vendor"))
    groups = data.get("model_groups")
    for group, deployments in (groups if isinstance(groups, Mapping) else {}).items():
        for index, deployment in enumerate(deployments if isinstance(deployments, list) else []):
            if isinstance(deployment, Mapping):
                check(deployment.get("vendor"), ("model_groups", group, index, "vendor"))
    for section, table in (
        ("cost_optimization", "vendor_costs"),
        ("latency_optimization", "latency_weights"),
    ):
        entry = data.get(section)
        mapping = entry.get(table) if isinstance(entry, Mapping) else None
        for name in mapping if isinstance(mapping, Mapping) else ():
            check(name, (section, table, name))

    problems.extend(_missing_endpoints(data, vendors, env_names))
    return problems


def _missing_endpoints(
    data: Mapping[str, Any], vendors: Mapping[str, Any], env_names: Mapping[str, str]
) -> list[InitErrorDetails]:
    """Vendor types with no public default URL must be given one, in the file or the env."""
    problems: list[InitErrorDetails] = []
    env_endpoints = {spec.name for spec in ENV_VENDORS if data.get(spec.base_url_field)}
    for name, entry in vendors.items():
        kind = entry.get("type") if isinstance(entry, Mapping) else None
        if (
            isinstance(kind, str)
            and kind in TYPES_NEEDING_BASE_URL
            and not entry.get("base_url")
            and name not in env_endpoints
        ):
            problems.append(
                custom_error(
                    "missing_base_url",
                    ("vendors", name, "base_url"),
                    f"is required for type {kind!r}",
                )
            )
    for spec in ENV_VENDORS:
        if (
            spec.type in TYPES_NEEDING_BASE_URL
            and not vendors
            and data.get(spec.key_field)
            and not data.get(spec.base_url_field)
        ):
            problems.append(
                custom_error(
                    "missing_base_url",
                    (spec.base_url_field,),
                    f"is required when {env_names[spec.key_field]} is set",
                )
            )
    return problems
