"""The `llmdispatch` command line: parses arguments, calls the library, prints.

This module builds the app and lists its commands; each group lives in its own
module: `cli_jobs` (submit, send, get, wait, stream, cancel, stats), `cli_celery`
(worker, flower), `cli_config` (config check), `cli_mock_server` (mock-server),
`cli_batch` (batch submit, status, wait, results, cancel, retry-failed),
`cli_demo` (demo), `cli_health` (health check), `cli_vendors` (vendor, circuit reset).

The exit codes scripts can rely on are listed in `producer.cli.exit_codes`;
the `EXIT_*` names are importable from here too.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dispatcher import __version__
from producer.cli.batch import batch_app
from producer.cli.celery_commands import flower_command, worker_command
from producer.cli.config import config_app
from producer.cli.demo import demo_command
from producer.cli.exit_codes import (
    EXIT_BATCH_ITEMS_FAILED,
    EXIT_CONFIG_INVALID,
    EXIT_JOB_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from producer.cli.health import health_app
from producer.cli.jobs import (
    cancel_command,
    get_command,
    send_command,
    stats_command,
    status_command,
    stream_command,
    submit_command,
    wait_command,
)
from producer.cli.metrics import metrics_command
from producer.cli.mock_server import mock_server
from producer.cli.serve import serve_command
from producer.cli.vendors import circuit_app, vendor_command
from producer.client import Client

__all__ = [
    "EXIT_BATCH_ITEMS_FAILED",
    "EXIT_CONFIG_INVALID",
    "EXIT_JOB_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "app",
    "main",
    "make_client",
]

app = typer.Typer(
    name="llmdispatch",
    help="Queue-backed dispatcher for LLM completion jobs.",
    no_args_is_help=True,
    add_completion=False,
    # Click's plain help: Typer's rich panels print a `<bool>` type beside every flag.
    rich_markup_mode=None,
)
app.add_typer(config_app, name="config")
app.add_typer(batch_app, name="batch")
app.add_typer(circuit_app, name="circuit")
app.add_typer(health_app, name="health")


def make_client() -> Client:
    """The client the job commands use: `Client.from_env()` (tests replace this function)."""
    return Client.from_env()


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"llmdispatch {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Queue-backed dispatcher for LLM completion jobs."""
    # The job commands build their client with whatever `make_client` is when they run.
    ctx.obj = make_client


# In the order `llmdispatch --help` lists them.
app.command("demo")(demo_command)
app.command("mock-server")(mock_server)
app.command("submit")(submit_command)
app.command("send")(send_command)
app.command("get")(get_command)
app.command("wait")(wait_command)
app.command("stream")(stream_command)
app.command("cancel")(cancel_command)
app.command("stats")(stats_command)
app.command("status")(status_command)
app.command("vendor")(vendor_command)
app.command("worker")(worker_command)
app.command("flower")(flower_command)
app.command("metrics")(metrics_command)
app.command("serve")(serve_command)


def main() -> None:
    """Entry point of the `llmdispatch` console script."""
    app()
