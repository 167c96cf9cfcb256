"""The `llmdispatch` command line: parses arguments, calls the library, prints.

Exit codes scripts can rely on:

    0  success (for `cancel`: the job was cancelled, or had already ended)
    1  the job failed or was cancelled, or could not be routed (no vendor, over budget)
    2  bad usage: unknown option, missing prompt, or an invalid request
    3  invalid configuration
    4  no such job (never existed, expired, or not a job id)
    5  timed out waiting for the job (it keeps running)
    6  Redis or the broker could not be reached
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import redis
import typer
from pydantic import ValidationError

from dispatcher import (
    ConfigError,
    DispatcherError,
    InvalidRequest,
    JobNotFound,
    JobRecord,
    Settings,
    Stats,
    VendorStats,
    __version__,
)
from dispatcher.redaction import redact
from producer.client import DEFAULT_WAIT_TIMEOUT_S, Client

__all__ = [
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

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG_INVALID = 3
EXIT_NOT_FOUND = 4
EXIT_TIMEOUT = 5
EXIT_UNAVAILABLE = 6

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


# --- jobs ----------------------------------------------------------------------------

PromptArg = Annotated[
    str | None, typer.Argument(metavar="PROMPT", help="The user message; - reads stdin.")
]
FileOpt = Annotated[Path | None, typer.Option(help="A JSON request object; - reads stdin.")]
ModelOpt = Annotated[str | None, typer.Option(help="Model or model group name.")]
SystemOpt = Annotated[str | None, typer.Option(help="A system message before the prompt.")]
MaxTokensOpt = Annotated[int | None, typer.Option(help="Most tokens to generate.")]
TemperatureOpt = Annotated[float | None, typer.Option(help="Sampling temperature, 0-2.")]
VendorOpt = Annotated[str | None, typer.Option(help="Preferred vendor, when it can take it.")]
PriorityOpt = Annotated[int | None, typer.Option(help="Queue priority, 0-9.")]
TimeoutOpt = Annotated[float, typer.Option(min=0.0, help="Seconds to wait for the job.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
JobIdArg = Annotated[str, typer.Argument(metavar="JOB_ID", help="The id that submit printed.")]


# The request fields that submit's and send's options set, in the order they pass them.
_OPTION_FIELDS = ("model", "max_tokens", "temperature", "vendor", "priority")


def make_client() -> Client:
    """The client the job commands use: `Client.from_env()` (tests replace this function)."""
    return Client.from_env()


@app.command("submit")
def submit_command(
    prompt: PromptArg = None,
    *,
    file: FileOpt = None,
    model: ModelOpt = None,
    system: SystemOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = None,
    vendor: VendorOpt = None,
    priority: PriorityOpt = None,
) -> None:
    """Queue a job (a PROMPT, or a JSON request with --file) and print its id."""
    request = _request(prompt, file, system, (model, max_tokens, temperature, vendor, priority))
    with _exit_codes(), make_client() as client:
        typer.echo(client.submit(request))


@app.command("send")
def send_command(
    prompt: PromptArg = None,
    *,
    file: FileOpt = None,
    model: ModelOpt = None,
    system: SystemOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = None,
    vendor: VendorOpt = None,
    priority: PriorityOpt = None,
    timeout: TimeoutOpt = DEFAULT_WAIT_TIMEOUT_S,
    as_json: JsonOpt = False,
) -> None:
    """Queue a job, wait for it to end and print the reply (submit, then wait)."""
    request = _request(prompt, file, system, (model, max_tokens, temperature, vendor, priority))
    with _exit_codes(), make_client() as client:
        response = client.send(request, timeout_s=timeout)
        typer.echo(response.model_dump_json(indent=2) if as_json else response.content)


@app.command("get")
def get_command(job_id: JobIdArg, as_json: JsonOpt = False) -> None:
    """Print a job's record: status, route, timings, and its reply or error."""
    with _exit_codes(), make_client() as client:
        record = client.get(job_id)
        typer.echo(record.model_dump_json(indent=2) if as_json else _record_text(record))


@app.command("wait")
def wait_command(
    job_id: JobIdArg, timeout: TimeoutOpt = DEFAULT_WAIT_TIMEOUT_S, as_json: JsonOpt = False
) -> None:
    """Wait for a job to end and print its reply; exits 1 if it failed, 5 on timeout."""
    with _exit_codes(), make_client() as client:
        response = client.wait(job_id, timeout_s=timeout)
        typer.echo(response.model_dump_json(indent=2) if as_json else response.content)


@app.command("cancel")
def cancel_command(job_id: JobIdArg) -> None:
    """Cancel a job that has not ended yet (exits 0 when it had already ended, too)."""
    with _exit_codes(), make_client() as client:
        cancelled = client.cancel(job_id)
    typer.echo(f"cancelled job {job_id}" if cancelled else f"job {job_id} had already ended")


@app.command("stats")
def stats_command(as_json: JsonOpt = False) -> None:
    """Print the statistics of every job that ended, in total and per vendor."""
    with _exit_codes(), make_client() as client:
        stats = client.stats()
    typer.echo(stats.model_dump_json(indent=2) if as_json else _stats_text(stats))


# Library errors and the exit code each means; the first match wins, so specific ones lead.
_EXIT_CODES: tuple[tuple[type[Exception], int], ...] = (
    (ConfigError, EXIT_CONFIG_INVALID),
    (InvalidRequest, EXIT_USAGE),
    (JobNotFound, EXIT_NOT_FOUND),
    (TimeoutError, EXIT_TIMEOUT),
    (DispatcherError, EXIT_JOB_FAILED),
    (redis.ConnectionError, EXIT_UNAVAILABLE),
    (redis.TimeoutError, EXIT_UNAVAILABLE),
)


@contextmanager
def _exit_codes() -> Iterator[None]:
    """Report the library's errors on stderr and exit with the documented code."""
    try:
        yield
    except Exception as exc:
        # Imported only here: kombu comes with Celery, which most commands never load.
        from kombu.exceptions import OperationalError  # noqa: PLC0415

        codes: list[tuple[type[Exception], int]] = [
            *_EXIT_CODES,
            (OperationalError, EXIT_UNAVAILABLE),
        ]
        code = next((code for kind, code in codes if isinstance(exc, kind)), None)
        if code is None:
            raise
        hint = " (is REDIS_URL right, and is Redis running?)" if code == EXIT_UNAVAILABLE else ""
        typer.echo(f"error: {redact(str(exc))}{hint}", err=True)
        raise typer.Exit(code) from None


def _request(
    prompt: str | None, file: Path | None, system: str | None, options: tuple[Any, ...]
) -> dict[str, Any]:
    """The request as a dict (the client validates it): the prompt or file, then `options`."""
    if (prompt is None) == (file is None):
        raise typer.BadParameter("give either a PROMPT or --file", param_hint="PROMPT / --file")
    if file is not None:
        if system is not None:
            raise typer.BadParameter("put the system message in the file", param_hint="--system")
        data = _read_request_file(file)
    else:
        text = sys.stdin.read() if prompt == "-" else str(prompt)
        system_message = [{"role": "system", "content": system}] if system is not None else []
        data = {"messages": [*system_message, {"role": "user", "content": text}]}
    named = zip(_OPTION_FIELDS, options, strict=True)
    data.update({name: value for name, value in named if value is not None})
    if "model" not in data:
        raise typer.BadParameter('required (or a "model" in --file)', param_hint="--model")
    return data


def _read_request_file(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(sys.stdin.read() if str(file) == "-" else file.read_text("utf-8"))
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {file}: {exc.strerror}", param_hint="--file"
        ) from None
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{file} is not valid JSON: {exc}", param_hint="--file") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{file} must hold one JSON object", param_hint="--file")
    return data


def _record_text(record: JobRecord) -> str:
    route, usage = record.route, record.usage
    lines = [
        f"job:      {record.job_id}",
        f"status:   {record.status.value} after {record.attempts} attempt(s)",
        f"model:    {record.request.model}"
        + (f" -> {route.vendor}/{route.model} ({route.reason})" if route else ""),
        f"created:  {record.created_at.isoformat()}",
    ]
    if record.finished_at is not None:
        total = f" (total {record.total_ms:.0f} ms)" if record.total_ms is not None else ""
        lines.append(f"finished: {record.finished_at.isoformat()}{total}")
    if usage is not None:
        lines.append(
            f"tokens:   {usage.prompt_tokens} in, {usage.completion_tokens} out, "
            f"cost ${record.cost_usd:.6f}"
        )
    if record.error is not None:
        lines.append(f"error:    {record.error.kind}: {record.error.message}")
    if record.response is not None:
        lines += ["reply:", record.response.content]
    return "\n".join(lines)


_STATS_HEADER = ("vendor", "jobs", "ok %", "failed", "retries", "fallbacks", "p50 ms", "p95 ms")


def _stats_text(stats: Stats) -> str:
    def row(name: str, jobs: int, failed: int, of: Stats | VendorStats) -> list[str]:
        numbers = [jobs, f"{of.success_rate():.1f}", failed, of.retries, of.fallbacks]
        latency = [f"{of.p50_latency_ms:.0f}", f"{of.p95_latency_ms:.0f}"]
        return [name, *map(str, numbers), *latency]

    rows = [list(_STATS_HEADER), row("(all)", stats.total_requests, stats.failed_requests, stats)]
    rows += [row(name, v.requests, v.failures, v) for name, v in sorted(stats.vendor_stats.items())]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_STATS_HEADER))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)) for r in rows
    ]
    return "\n".join(
        [
            *(line.rstrip() for line in lines),
            f"cancelled {stats.cancelled_requests}; tokens {stats.prompt_tokens} in, "
            f"{stats.completion_tokens} out; cost ${stats.total_cost_usd:.6f}; queue wait "
            f"p50 {stats.p50_queue_wait_ms:.0f} ms, p95 {stats.p95_queue_wait_ms:.0f} ms",
        ]
    )


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
