"""`llmdispatch worker` and `llmdispatch flower`: start Celery in place of the CLI.

`producer` never imports `workers`, so these commands do not run Celery in this
process: they replace it (`os.execvpe`) with `python -m celery -A workers.app ...`,
so signals (Ctrl-C, SIGTERM from a supervisor) reach Celery directly. With
`--print` they print that command, as a line a shell can run, instead.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Annotated

import typer

from dispatcher.routing.router import vendor_queues
from producer.cli.config import fail_unless_buildable
from producer.cli.exit_codes import EXIT_CONFIG_INVALID, EXIT_USAGE, fail, load_settings
from producer.loopback import is_loopback

__all__ = ["flower_command", "worker_command"]

# The variable naming the vendors a worker holds; workers/runtime.py reads it
# (WORKER_VENDORS_ENV there, spelled out here because producer never imports workers).
WORKER_VENDORS_ENV = "LLMDISPATCH_WORKER_VENDORS"
# Flower reads any of its options from FLOWER_<OPTION>; the password travels this way,
# since a process's arguments are readable by every user of the machine and its
# environment only by its owner.
FLOWER_BASIC_AUTH_ENV = "FLOWER_BASIC_AUTH"
# Vendor calls are I/O-bound: a task thread only waits while the process's one event
# loop makes the call, so hundreds per process cost little (workers/runtime.py sizes
# its Redis and HTTP pools for about a thousand).
DEFAULT_CONCURRENCY = 500
# Threads suit a task that only waits; prefork would start one event loop per child.
DEFAULT_POOL = "threads"
DEFAULT_FLOWER_PORT = 5555
# Loopback by default: Flower can revoke tasks and shut workers down.
DEFAULT_FLOWER_ADDRESS = "127.0.0.1"

_CELERY = [sys.executable, "-m", "celery", "-A", "workers.app"]


def _replace_process(
    argv: list[str], env: dict[str, str], *, print_only: bool, shown_env: dict[str, str]
) -> None:
    """Exec `argv` with `env` added to this environment, or print it (`shown_env` masked)."""
    if print_only:
        assignments = [f"{name}={shlex.quote(value)}" for name, value in shown_env.items()]
        typer.echo(" ".join([*assignments, shlex.join(argv)]))
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, {**os.environ, **env})  # noqa: S606 - our own interpreter


def _plural(names: list[str]) -> str:
    return "s" if len(names) > 1 else ""


def _vendor_names(requested: str | None) -> list[str]:
    """The vendors to serve: `requested` (comma-separated), checked, or every enabled one."""
    settings = load_settings()
    enabled = list(settings.enabled_vendors())
    if requested is None:
        if not enabled:
            configured = ", ".join(settings.vendors) or "none"
            fail(
                f"no vendor is enabled in the configuration (configured: {configured})",
                EXIT_CONFIG_INVALID,
            )
        fail_unless_buildable(settings.enabled_vendors())
        return enabled
    names = list(dict.fromkeys(name.strip() for name in requested.split(",") if name.strip()))
    if not names:
        raise typer.BadParameter("name at least one vendor", param_hint="--vendors")
    unknown = [name for name in names if name not in settings.vendors]
    if unknown:
        fail(
            f"unknown vendor{_plural(unknown)} {', '.join(map(repr, unknown))} "
            f"(configured: {', '.join(settings.vendors) or 'none'})",
            EXIT_CONFIG_INVALID,
        )
    disabled = [name for name in names if name not in enabled]
    if disabled:
        fail(
            f"disabled vendor{_plural(disabled)} {', '.join(map(repr, disabled))} "
            f"(enabled: {', '.join(enabled) or 'none'})",
            EXIT_CONFIG_INVALID,
        )
    fail_unless_buildable({name: settings.vendors[name] for name in names})
    return names


def worker_command(
    *,
    vendors: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated vendors whose queues (llm.<vendor> and its batch lane "
            "llm.<vendor>.batch) this worker consumes; "
            "default: every enabled vendor in the configuration.",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            "-c",
            min=1,
            help="Task threads per worker process. Vendor calls are I/O-bound; one event loop "
            "per process runs them; threads only wait, so hundreds are cheap.",
        ),
    ] = DEFAULT_CONCURRENCY,
    pool: Annotated[
        str,
        typer.Option(help="Celery execution pool; threads, since each task only waits."),
    ] = DEFAULT_POOL,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "info",
    hostname: Annotated[
        str | None,
        typer.Option(
            "--hostname",
            "-n",
            help="Node name; give each worker on one machine its own "
            "(default: its vendors joined by '+', e.g. openai+anthropic@%h).",
            show_default=False,
        ),
    ] = None,
    print_only: Annotated[
        bool,
        typer.Option("--print", "--dry-run", help="Print the command instead of running it."),
    ] = False,
    celery_args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="CELERY_ARGS",
            help="Further `celery worker` options, after a lone --: worker -- --without-gossip.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a Celery worker for some vendors' queues (replaces this process).

    Runs `python -m celery -A workers.app worker -Q llm.<vendor>,llm.<vendor>.batch,...` with
    LLMDISPATCH_WORKER_VENDORS set, so the worker builds clients for those
    vendors only. Exits 3 if a vendor is not configured or is disabled.
    """
    names = _vendor_names(vendors)
    argv = [
        *_CELERY,
        "worker",
        "-Q",
        ",".join(queue for name in names for queue in vendor_queues(name)),
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        # Two workers for the same vendors on one host still need distinct names;
        # Celery warns about the clash and Flower merges them, so say so in --help.
        "--hostname",
        hostname or f"{'+'.join(names)}@%h",
        *(celery_args or []),
    ]
    env = {WORKER_VENDORS_ENV: ",".join(names)}
    _replace_process(argv, env, print_only=print_only, shown_env=env)


def _check_basic_auth(value: str | None) -> str | None:
    """Every comma-separated entry must be user:password, both non-empty."""
    if value is not None:
        for entry in value.split(","):
            user, _, password = entry.partition(":")
            if not (user and password):
                raise typer.BadParameter("expected user:password (comma-separated for several)")
    return value


def flower_command(
    *,
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port of the web UI and API.")
    ] = DEFAULT_FLOWER_PORT,
    address: Annotated[
        str, typer.Option(help="Interface to listen on; 0.0.0.0 for every one.")
    ] = DEFAULT_FLOWER_ADDRESS,
    basic_auth: Annotated[
        str | None,
        typer.Option(
            envvar=FLOWER_BASIC_AUTH_ENV,
            callback=_check_basic_auth,
            help="user:password that the UI and API require (comma-separated for several).",
            show_default=False,
        ),
    ] = None,
    print_only: Annotated[
        bool,
        typer.Option(
            "--print",
            "--dry-run",
            help="Print the command, passwords masked, instead of running it.",
        ),
    ] = False,
) -> None:
    """Run Flower, Celery's monitoring web UI, on the dispatcher's broker (replaces this process).

    Runs `python -m celery -A workers.app flower`, handing it --basic-auth through
    its FLOWER_BASIC_AUTH variable rather than its arguments, which other users can
    read. Without --basic-auth, anyone who can reach the address sees the UI, and
    Flower 2 answers its API (/api/...) with 401 unless FLOWER_UNAUTHENTICATED_API
    is set in the environment.
    """
    argv = [*_CELERY, "flower", f"--port={port}", f"--address={address}"]
    env: dict[str, str] = {}
    shown: dict[str, str] = {}
    if basic_auth is not None:
        env[FLOWER_BASIC_AUTH_ENV] = basic_auth
        shown[FLOWER_BASIC_AUTH_ENV] = ",".join(
            f"{entry.partition(':')[0]}:***" for entry in basic_auth.split(",")
        )
    elif not is_loopback(address):
        # Flower can revoke tasks and shut workers down: never open to a network unasked.
        fail(
            f"refusing to start Flower on {address} without --basic-auth: anyone who can "
            "reach it could stop workers; set FLOWER_BASIC_AUTH=user:password, "
            f"or listen on {DEFAULT_FLOWER_ADDRESS} only",
            EXIT_USAGE,
        )
    else:
        typer.echo(
            f"note: no --basic-auth: Flower on {address}:{port} is open to this machine's "
            "users; its API answers 401 unless FLOWER_UNAUTHENTICATED_API is set",
            err=True,
        )
    _replace_process(argv, env, print_only=print_only, shown_env=shown)
