"""`llmdispatch config`: load the configuration, validate it and print it with secrets masked."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

import redis
import typer

from dispatcher import ConfigError, Settings
from dispatcher.config.redis_address import shown_redis_url
from dispatcher.config.schema import VendorConfig
from dispatcher.state.redis_connect import redis_client
from dispatcher.vendors import unbuildable_vendors
from producer.cli.exit_codes import (
    EXIT_CONFIG_INVALID,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    fail,
    load_settings,
)
from producer.cli.health import health_exit_code, health_lines, probe_vendors

__all__ = [
    "config_app",
    "config_check",
    "fail_unless_buildable",
    "summarise",
]

# How long `config check --ping` waits for Redis.
PING_TIMEOUT_S = 5.0

config_app = typer.Typer(
    help="Inspect and validate the configuration.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, as the root command's (producer.cli.root)
)


@config_app.command("check")
def config_check(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    ping: Annotated[
        bool,
        typer.Option(
            "--ping", help="Also check that Redis answers and probe every enabled vendor once."
        ),
    ] = False,
) -> None:
    """Validate the configuration (environment and LLMDISPATCH_CONFIG file) and print it.

    Secrets are never printed: an API key shows as 'set' or 'not set'. Exits with 3,
    listing every problem with its path, when the configuration is invalid or no
    vendor is enabled. With --ping (for deploy scripts) it also checks that Redis
    answers (exit 6 when not) and probes each enabled vendor as a worker would:
    exit 3 when one refuses its key, 6 when one is unreachable.
    """
    settings = load_settings()
    summary = summarise(settings)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(_as_text(summary))
    if not settings.enabled_vendors():
        fail(NO_VENDOR, EXIT_CONFIG_INVALID)
    fail_unless_buildable(settings.enabled_vendors())
    if ping:
        _ping(settings)


# Why a configuration without an enabled vendor is refused, and what to do.
NO_VENDOR = (
    "invalid configuration: no vendor is enabled; set one up in LLMDISPATCH_CONFIG, "
    "or set a vendor's API key (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...)"
)


def fail_unless_buildable(vendors: Mapping[str, VendorConfig]) -> None:
    """Exit 3, naming each, when a vendor's factory cannot be found or imported."""
    problems = unbuildable_vendors(vendors)
    if problems:
        fail(str(ConfigError(problems)), EXIT_CONFIG_INVALID)


def _ping(settings: Settings) -> None:
    """Redis answers, and each enabled vendor's probe: exits non-zero on a failure."""

    shown = shown_redis_url(settings.redis_url.get_secret_value())
    client = redis_client(
        settings, socket_timeout=PING_TIMEOUT_S, socket_connect_timeout=PING_TIMEOUT_S
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        fail(f"redis: no answer from {shown}: {type(exc).__name__}", EXIT_UNAVAILABLE)
    finally:
        client.close()
    typer.echo(f"redis: {shown} answers")
    found = probe_vendors(settings)
    typer.echo("vendors (probed now):")
    typer.echo("\n".join(f"  {line}" for line in health_lines(found)))
    code = health_exit_code(found)
    if code != EXIT_OK:
        raise typer.Exit(code)


def summarise(settings: Settings) -> dict[str, Any]:
    """The resolved configuration, with every secret masked."""
    return {
        "redis_url": shown_redis_url(settings.redis_url.get_secret_value()),
        "key_prefix": settings.key_prefix,
        "config_file": str(settings.config_file) if settings.config_file else None,
        "vendors": {
            name: {
                "type": vendor.type,
                "endpoint": vendor.endpoint,
                "api_key": "set" if vendor.api_key is not None else "not set",
                "models": list(vendor.model_patterns()) or ["*"],
                "enabled": vendor.enabled,
                "weight": vendor.weight,
                "priority": vendor.priority,
                "rpm": vendor.rpm,
                "tpm": vendor.tpm,
                "timeout_s": vendor.timeout,
            }
            for name, vendor in settings.vendors.items()
        },
        "model_groups": {
            name: [f"{d.vendor}/{d.model}" for d in deployments]
            for name, deployments in settings.model_groups.items()
        },
        "routing_rules": [rule.model_dump(mode="json") for rule in settings.routing_rules],
        "default_vendor": settings.default_vendor,
        "fallback_vendor": settings.fallback_vendor,
        "retry_policy": settings.retry_policy.model_dump(mode="json"),
        "cost_optimization": settings.cost_optimization.model_dump(mode="json"),
        "latency_optimization": settings.latency_optimization.model_dump(mode="json"),
    }


def _as_text(summary: dict[str, Any]) -> str:
    lines = [
        "configuration is valid",
        f"redis:       {summary['redis_url']} (key prefix {summary['key_prefix']!r})",
        f"config file: {summary['config_file'] or '(none)'}",
        "vendors:" if summary["vendors"] else "vendors:     (none configured)",
    ]
    for name, vendor in summary["vendors"].items():
        state = "enabled" if vendor["enabled"] else "disabled"
        lines.append(
            f"  {name:<12} {vendor['type']:<18} {state:<8} key {vendor['api_key']:<7} "
            f"weight {vendor['weight']:g}  priority {vendor['priority']}  "
            f"models {', '.join(vendor['models'])}  endpoint {vendor['endpoint'] or '-'}"
        )
    if summary["model_groups"]:
        lines.append("model groups:")
        lines.extend(
            f"  {name}: {' -> '.join(members)}" for name, members in summary["model_groups"].items()
        )
    if summary["routing_rules"]:
        lines.append("routing rules:")
        for rule in summary["routing_rules"]:
            condition = {k: v for k, v in rule["condition"].items() if v is not None}
            lines.append(
                f"  {rule['name'] or '(unnamed)'}: {condition or 'always'} -> {rule['vendor']} "
                f"(priority {rule['priority']}{'' if rule['enabled'] else ', disabled'})"
            )
    lines.append(f"default vendor:  {summary['default_vendor'] or '-'}")
    lines.append(f"fallback vendor: {summary['fallback_vendor'] or '-'}")
    policy = summary["retry_policy"]
    lines.append(
        f"retry policy:    {policy['max_retries']} retries, {policy['backoff']} backoff "
        f"{policy['initial_delay_s']}s..{policy['max_delay_s']}s"
    )
    return "\n".join(lines)
