"""`llmdispatch health check [VENDOR]`: probe vendors now, say why one is not healthy.

The same probe the workers run on a schedule (`dispatcher.runner.health.probe`), made at
once from this process: for an operator who just fixed a key, or a deploy script.
Its results are recorded in Redis like a worker's, so producers route by them at
once. `config check --ping` runs the same probes without recording them.

Exit codes: 0 when no vendor is unhealthy; 3 when one is for a reason only the
configuration can fix (a key refused, a quota, a request the vendor calls
invalid); 6 when one is unreachable or failing, or Redis does not answer.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from dispatcher import Settings
from dispatcher.config.settings import DEFAULT_HEALTH_CHECK_INTERVAL_S
from dispatcher.models import HealthStatus
from dispatcher.runner.health import RESULT_LIFETIME_INTERVALS, probe_now
from dispatcher.vendors.base import Health
from producer.cli.exit_codes import (
    EXIT_CONFIG_INVALID,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    exit_codes,
    fail,
    load_settings,
)

__all__ = ["health_app", "health_check", "health_exit_code", "health_lines", "probe_vendors"]

# Probe failures that only a change of configuration (a key, a plan) can mend.
CONFIGURATION_PROBLEMS = frozenset({"auth", "quota", "invalid_request", "config"})

health_app = typer.Typer(
    help="Probe vendors and show their health.", no_args_is_help=True, rich_markup_mode=None
)


def probe_vendors(settings: Settings, vendor: str | None = None) -> dict[str, Health]:
    """Probe `vendor` (any configured one), or every enabled vendor, once, now."""
    if vendor is not None:
        if vendor not in settings.vendors:
            configured = ", ".join(sorted(settings.vendors)) or "none"
            fail(f"unknown vendor {vendor!r} (configured: {configured})", EXIT_USAGE)
        names = [vendor]
    else:
        names = sorted(settings.enabled_vendors())
    return asyncio.run(probe_now(settings, names))


def health_lines(found: dict[str, Health]) -> list[str]:
    """One line per vendor: its name, its health, the probe's latency and what it said."""
    lines = []
    for name, health in found.items():
        latency = f"{health.latency_ms:.0f} ms" if health.latency_ms is not None else "-"
        said = f"  {health.detail}" if health.detail else ""
        lines.append(f"{name:<14} {health.status.value:<10} {latency:>8}{said}")
    return lines


def health_exit_code(found: dict[str, Health]) -> int:
    """3 when a vendor is unhealthy for a configuration reason, 6 for another, else 0."""
    unhealthy = [h for h in found.values() if h.status is HealthStatus.UNHEALTHY]
    if any(h.problem in CONFIGURATION_PROBLEMS for h in unhealthy):
        return EXIT_CONFIG_INVALID
    return EXIT_UNAVAILABLE if unhealthy else EXIT_OK


@health_app.command("check")
def health_check(
    ctx: typer.Context,
    vendor: Annotated[
        str | None, typer.Argument(help="The vendor to probe; default every enabled one.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Probe vendors now and record what was found, as a worker's scheduled probe does.

    Exit code 0 when no vendor is unhealthy, 3 when one refuses its key (or another
    reason only the configuration can fix), 6 when one is unreachable or failing.
    """
    settings = load_settings()
    found = probe_vendors(settings, vendor)
    if as_json:
        typer.echo(json.dumps({n: h.model_dump(mode="json") for n, h in found.items()}, indent=2))
    else:
        typer.echo("\n".join(health_lines(found)) or "no vendor is enabled")
    interval = settings.health_check_interval_s or DEFAULT_HEALTH_CHECK_INTERVAL_S
    with exit_codes(), ctx.obj() as client:
        for name, health in found.items():
            client.store.health.save(name, health, interval * RESULT_LIFETIME_INTERVALS)
    raise typer.Exit(health_exit_code(found))
