"""`llmdispatch vendor NAME` and `llmdispatch circuit reset VENDOR`: one vendor, for operators.

`vendor` prints what `Client.vendor` returns: the vendor's configuration with
every secret masked, its health, circuit, queue and traffic against its limits.
`circuit reset` closes a vendor's circuit breaker for every worker and producer
(`Client.reset_circuit`). An unknown name exits 4, naming the configured vendors.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

import typer

from dispatcher import CircuitState, VendorDetail
from dispatcher.config.schema import RateLimit
from producer.cli.exit_codes import exit_codes
from producer.client import Client

__all__ = ["circuit_app", "reset_command", "vendor_command", "vendor_text"]

circuit_app = typer.Typer(
    help="Operate the vendors' circuit breakers, which every worker and producer shares.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, as the root command's (producer.cli.root)
)

VendorArg = Annotated[
    str, typer.Argument(metavar="VENDOR", help="A configured vendor's name (see config check).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _client(ctx: typer.Context) -> Client:
    """A new client from the factory on the context (the root command puts it there)."""
    make_client: Callable[[], Client] = ctx.obj
    return make_client()


def vendor_command(ctx: typer.Context, name: VendorArg, as_json: JsonOpt = False) -> None:
    """Print one vendor: its configuration (secrets masked), health, circuit and limits.

    Exits 4 if no vendor has that name (the configured ones are listed).
    """
    with exit_codes(), _client(ctx) as client:
        detail = client.vendor(name)
    typer.echo(detail.model_dump_json(indent=2) if as_json else vendor_text(detail))


@circuit_app.command("reset")
def reset_command(ctx: typer.Context, vendor: VendorArg) -> None:
    """Close a vendor's circuit breaker now, for every worker and producer.

    Its count of failures in a row starts again from zero; workers see it at their
    next job, producers within a second. Exits 4 if no vendor has that name.
    """
    with exit_codes(), _client(ctx) as client:
        before = client.reset_circuit(vendor)
    if before is CircuitState.CLOSED:
        typer.echo(f"the circuit of {vendor} was closed already; its failure count is cleared")
    else:
        typer.echo(f"the circuit of {vendor} was {before.value.replace('_', '-')}; it is closed")


def vendor_text(detail: VendorDetail) -> str:
    """The vendor as label: value lines."""
    config, status = detail.config, detail.status
    checked = f", checked {_moment(status.health_checked_at)}" if status.health_checked_at else ""
    latency = f", {status.health_latency_ms:.0f} ms" if status.health_latency_ms is not None else ""
    health = f"{status.health.value}{latency}{checked}"
    lines = [
        f"vendor:    {detail.name} ({config.type}, {'enabled' if detail.enabled else 'disabled'})",
        f"endpoint:  {detail.endpoint or '-'}",
        f"models:    {', '.join(detail.models)}",
        f"api key:   {'set' if config.api_key is not None else 'not set'}",
        f"health:    {health}" + (f": {status.health_detail}" if status.health_detail else ""),
        f"circuit:   {status.circuit.value}",
        f"queued:    {status.queue_depth}, in flight {status.in_flight}",
        f"requests:  {status.requests}, errors {status.errors}, avg {status.avg_latency_ms:.0f} ms",
        f"last min:  {status.requests_per_minute:.0f} requests "
        f"(limit {_or_none(status.rpm_limit)}), {status.tokens_per_minute:.0f} tokens "
        f"(limit {_or_none(status.tpm_limit)})",
        f"limits:    {_limit(config.limit)}",
    ]
    lines += [
        f"  model {pattern}: {_limit(limit)}" for pattern, limit in config.model_limits.items()
    ]
    if config.tenant_limit is not None:
        lines.append(f"  each tenant: {_limit(config.tenant_limit)}")
    lines += [
        f"timeout:   {config.timeout:g} s",
        f"routing:   weight {config.weight:g}, priority {config.priority}",
    ]
    return "\n".join(lines)


def _limit(limit: RateLimit) -> str:
    """A rate limit as `rpm 600 (burst 60), tpm 90000 (burst 9000)`, or `none`."""
    parts = [f"{kind} {per_s * 60:g} (burst {burst:g})" for kind, per_s, burst in limit.buckets()]
    return ", ".join(parts) or "none"


def _or_none(value: int | None) -> str:
    return "none" if value is None else str(value)


def _moment(at: datetime) -> str:
    return at.isoformat(timespec="seconds")
