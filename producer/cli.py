"""The `llmdispatch` command line: parses arguments, calls the library, prints.

Exit codes scripts can rely on: 0 success, 2 bad usage, 3 invalid configuration.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from dispatcher import ConfigError, Settings, __version__
from dispatcher.redaction import redact

__all__ = ["EXIT_CONFIG_INVALID", "EXIT_OK", "app", "main"]

EXIT_OK = 0
EXIT_CONFIG_INVALID = 3

app = typer.Typer(
    name="llmdispatch",
    help="Queue-backed dispatcher for LLM completion jobs.",
    no_args_is_help=True,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect and validate the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"llmdispatch {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Queue-backed dispatcher for LLM completion jobs."""


@config_app.command("check")
def config_check(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Validate the configuration (environment and LLMDISPATCH_CONFIG file) and print it.

    Secrets are never printed: an API key shows as 'set' or 'not set'.
    Exits with 3, listing every problem with its path, when the configuration is invalid.
    """
    try:
        settings = Settings.load()
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_CONFIG_INVALID) from None
    summary = summarise(settings)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(_as_text(summary))


@app.command("mock-server")
def mock_server(
    *,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one.")] = 8900,
    latency: Annotated[
        float, typer.Option(min=0.0, help="Seconds before the first byte of each completion.")
    ] = 0.0,
    chunk_delay: Annotated[
        float,
        typer.Option(
            min=0.0, help="Seconds between stream chunks (a whole reply waits as long in total)."
        ),
    ] = 0.0,
    chunk_count: Annotated[
        int | None,
        typer.Option(min=1, help="Chunks per streamed reply; default one chunk per word."),
    ] = None,
    failure_rate: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of completions that fail (requests without x-mock-fault)."
        ),
    ] = 0.0,
    failure_kinds: Annotated[
        str,
        typer.Option(
            help="Comma-separated failures drawn at --failure-rate: rate_limited (429), "
            "server_error (500), timeout (hang), midstream_drop (cut-off body)."
        ),
    ] = "rate_limited,server_error,timeout,midstream_drop",
    retry_after: Annotated[
        float, typer.Option(min=0.0, help="Seconds a 429 asks the caller to wait.")
    ] = 1.0,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the failure draws, for repeatable runs.")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="LLMDISPATCH_MOCK_API_KEY",
            help="Bearer key callers must send (401 otherwise); default: no auth.",
            show_default=False,
        ),
    ] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every request (slows the server).")
    ] = False,
) -> None:
    """Serve a mock OpenAI Chat Completions API for tests, demos and load tests.

    Point a vendor's base_url at the printed URL (http://HOST:PORT/v1). Replies
    are "echo: " plus the last user message, streamed one word per chunk; usage
    counts words. Per request, the x-mock-fault header injects a fault: a status
    such as 429 or 500, quota, slow:<ms>, stall:<ms>, timeout, midstream-drop or
    midstream-error (comma-separated to combine). Runs until Ctrl-C or SIGTERM.
    """
    # Imported here so that other commands do not pay for importing aiohttp.
    from producer.mock_server import MockServerOptions, run  # noqa: PLC0415

    kinds = [kind.strip() for kind in failure_kinds.split(",") if kind.strip()]
    try:
        options = MockServerOptions.model_validate(
            {
                "behaviour": {
                    "time_to_first_token_s": latency,
                    "chunk_delay_s": chunk_delay,
                    "chunk_count": chunk_count,
                    "failure_rate": failure_rate,
                    "failure_kinds": kinds,
                    "retry_after_s": retry_after,
                    "seed": seed,
                },
                "api_key": api_key,
                "access_log": access_log,
            }
        )
    except ValidationError as exc:
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise typer.BadParameter(message) from None
    run(host, port, options, announce=typer.echo)


def summarise(settings: Settings) -> dict[str, Any]:
    """The resolved configuration, with every secret masked."""
    return {
        "redis_url": redact(settings.redis_url.get_secret_value()),
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


def main() -> None:
    """Entry point of the `llmdispatch` console script."""
    app()
