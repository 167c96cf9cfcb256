"""The job commands: submit, send, get, wait, stream, cancel and stats.

Each builds its client with the factory the root command puts on the click
context (`producer.cli.root.make_client`), so tests can replace that one function.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from dispatcher import JobRecord, Stats, VendorStats
from dispatcher.config.settings import DEFAULT_MAX_REQUEST_BYTES
from dispatcher.models import StreamEvent, StreamEventType
from dispatcher.state.status import VendorStatus
from producer.cli.exit_codes import exit_codes
from producer.cli.table import table
from producer.client import DEFAULT_START_TIMEOUT_S, DEFAULT_WAIT_TIMEOUT_S, Client
from producer.streaming import tool_calls_of

__all__ = [
    "cancel_command",
    "get_command",
    "send_command",
    "stats_command",
    "stats_text",
    "stream_command",
    "submit_command",
    "wait_command",
]

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
StreamOpt = Annotated[
    bool, typer.Option("--stream", help="Print the reply as it is generated (--json: events).")
]
StartTimeoutOpt = Annotated[
    float, typer.Option(min=0.0, help="Seconds the job may stay queued before giving up.")
]
AfterOpt = Annotated[int, typer.Option(min=0, help="Print only the events after this seq.")]


# The most a request file (or a prompt on standard input) is read to: the largest request
# the dispatcher accepts by default, twice over for JSON's escaping; the client then
# checks the request against the configured maximum.
MAX_INPUT_BYTES = 2 * DEFAULT_MAX_REQUEST_BYTES + 64 * 1024
# The request fields that submit's and send's options set, in the order they pass them.
_OPTION_FIELDS = ("model", "max_tokens", "temperature", "vendor", "priority")


def _client(ctx: typer.Context) -> Client:
    """A new client from the factory on the context."""
    make_client: Callable[[], Client] = ctx.obj
    return make_client()


def submit_command(
    ctx: typer.Context,
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
    with exit_codes(), _client(ctx) as client:
        typer.echo(client.submit(request))


def send_command(
    ctx: typer.Context,
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
    stream: StreamOpt = False,
    start_timeout: StartTimeoutOpt = DEFAULT_START_TIMEOUT_S,
) -> None:
    """Queue a job, wait for it to end and print the reply (submit, then wait).

    With --stream the reply is printed as it is generated, as `stream` prints it;
    --start-timeout then bounds the wait for a worker, and --timeout does not apply.
    """
    request = _request(prompt, file, system, (model, max_tokens, temperature, vendor, priority))
    with exit_codes(), _client(ctx) as client:
        if stream:
            events = client.send_streaming(request, start_timeout_s=start_timeout)
            _print_stream(events, as_json=as_json)
            return
        response = client.send(request, timeout_s=timeout)
        typer.echo(response.model_dump_json(indent=2) if as_json else response.content)


def get_command(ctx: typer.Context, job_id: JobIdArg, as_json: JsonOpt = False) -> None:
    """Print a job's record: status, route, timings, and its reply or error."""
    with exit_codes(), _client(ctx) as client:
        record = client.get(job_id)
        typer.echo(record.model_dump_json(indent=2) if as_json else _record_text(record))


def wait_command(
    ctx: typer.Context,
    job_id: JobIdArg,
    timeout: TimeoutOpt = DEFAULT_WAIT_TIMEOUT_S,
    as_json: JsonOpt = False,
) -> None:
    """Wait for a job to end and print its reply; exits 1 if it failed, 5 on timeout."""
    with exit_codes(), _client(ctx) as client:
        response = client.wait(job_id, timeout_s=timeout)
        typer.echo(response.model_dump_json(indent=2) if as_json else response.content)


def stream_command(
    ctx: typer.Context,
    job_id: JobIdArg,
    after: AfterOpt = 0,
    start_timeout: StartTimeoutOpt = DEFAULT_START_TIMEOUT_S,
    as_json: JsonOpt = False,
) -> None:
    """Print a job's reply as it is generated (--json: one event per line).

    Exits 1 if the job failed, 4 if there is no such job, 5 if it never started.
    """
    with exit_codes(), _client(ctx) as client:
        events = client.stream(job_id, after=after, start_timeout_s=start_timeout)
        _print_stream(events, as_json=as_json)


def cancel_command(ctx: typer.Context, job_id: JobIdArg) -> None:
    """Cancel a job that has not ended yet (exits 0 when it had already ended, too)."""
    with exit_codes(), _client(ctx) as client:
        cancelled = client.cancel(job_id)
    typer.echo(f"cancelled job {job_id}" if cancelled else f"job {job_id} had already ended")


def stats_command(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Print the statistics of every job that ended, in total and per vendor."""
    with exit_codes(), _client(ctx) as client:
        stats = client.stats()
    typer.echo(stats.model_dump_json(indent=2) if as_json else stats_text(stats))


def status_command(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Print each vendor's status: health, circuit, queue, in flight, traffic against limits."""
    with exit_codes(), _client(ctx) as client:
        statuses = client.vendor_status()
    if as_json:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in statuses], indent=2))
    else:
        typer.echo("\n".join(_status_lines(statuses)))


def _status_lines(statuses: list[VendorStatus]) -> list[str]:
    def limit(rate: float, cap: int | None) -> str:
        return f"{rate:.0f}/{cap}" if cap is not None else f"{rate:.0f}"

    rows = [list(_STATUS_HEADER)]
    for s in statuses:
        rows.append(
            [
                s.name,
                s.health.value,
                s.circuit.value,
                str(s.queue_depth),
                str(s.in_flight),
                str(s.requests),
                str(s.errors),
                f"{s.avg_latency_ms:.0f}",
                limit(s.requests_per_minute, s.rpm_limit),
                limit(s.tokens_per_minute, s.tpm_limit),
            ]
        )
    if not statuses:
        return ["no vendors are configured"]
    # Why a vendor is not healthy, in the health check's own words (a key to check, ...).
    notes = [f"{s.name}: {s.health.value}: {s.health_detail}" for s in statuses if s.health_detail]
    return table(rows) + notes


def _print_stream(events: Iterable[StreamEvent], *, as_json: bool) -> None:
    """Print each event as it comes: its text, or with `as_json` one JSON line.

    A reset (a new attempt starts the reply over) is noted on stderr, and the text
    restarts on a new line. Text ends with a newline, even when the job fails midway.
    The reply's tool calls follow it, one line each, once the reply has ended.
    """
    line_open = False  # the last text printed did not end its line
    printed = False
    seen: list[StreamEvent] = []  # the events with tool-call pieces, since the last reset
    try:
        for event in events:
            if event.tool_calls or event.type is StreamEventType.RESET:
                seen = [] if event.type is StreamEventType.RESET else [*seen, event]
            if as_json:
                typer.echo(event.model_dump_json(exclude_none=True))
            elif event.type is StreamEventType.CHUNK and event.delta:
                typer.echo(event.delta, nl=False)  # click flushes every echo
                line_open, printed = not event.delta.endswith("\n"), True
            elif event.type is StreamEventType.RESET:
                if line_open:
                    typer.echo()
                    line_open = False
                typer.echo(f"[attempt {event.attempt} restarts the reply]", err=True)
    except BaseException:
        if line_open:
            typer.echo()  # the error message then starts on a line of its own
        raise
    if as_json:
        return
    calls = tool_calls_of(seen)
    if line_open or not (printed or calls):
        typer.echo()
    for call in calls:
        typer.echo(f"[tool call {call.id}: {call.name} {call.arguments}]")


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
        text = _read_bounded(None, "PROMPT") if prompt == "-" else str(prompt)
        system_message = [{"role": "system", "content": system}] if system is not None else []
        data = {"messages": [*system_message, {"role": "user", "content": text}]}
    named = zip(_OPTION_FIELDS, options, strict=True)
    data.update({name: value for name, value in named if value is not None})
    if "model" not in data:
        raise typer.BadParameter('required (or a "model" in --file)', param_hint="--model")
    return data


def _read_bounded(file: Path | None, param_hint: str) -> str:
    """The text of `file` (None or "-": standard input), refused past `MAX_INPUT_BYTES`."""
    try:
        if file is None or str(file) == "-":
            raw = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with file.open("rb") as opened:
                raw = opened.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {file}: {exc.strerror}", param_hint=param_hint
        ) from None
    if len(raw) > MAX_INPUT_BYTES:
        raise typer.BadParameter(
            f"{file or 'standard input'} is larger than {MAX_INPUT_BYTES:,} bytes: not one request",
            param_hint=param_hint,
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise typer.BadParameter(
            f"{file or 'standard input'} is not UTF-8 text (byte {exc.start})",
            param_hint=param_hint,
        ) from None


def _read_request_file(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(_read_bounded(file, "--file"))
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


_STATS_HEADER = (
    "vendor", "jobs", "ok %", "failed", "retries", "fallbacks", "p50 ms", "p95 ms",
    "cost $", "unpriced",
)  # fmt: skip


_STATUS_HEADER = (
    "vendor", "health", "circuit", "queued", "in flight", "requests", "errors",
    "avg ms", "rpm (now/limit)", "tpm (now/limit)",
)  # fmt: skip


def _unpriced_note(calls: int) -> str:
    if not calls:
        return ""
    return f" (without {calls} unpriced call{'s' if calls != 1 else ''}: configure `prices`)"


def stats_text(stats: Stats) -> str:
    def row(name: str, jobs: int, failed: int, of: Stats | VendorStats) -> list[str]:
        numbers = [jobs, f"{of.success_rate():.1f}", failed, of.retries, of.fallbacks]
        latency = [f"{of.p50_latency_ms:.0f}", f"{of.p95_latency_ms:.0f}"]
        cost = [f"{of.total_cost_usd:.6f}", str(of.unpriced_calls)]
        return [name, *map(str, numbers), *latency, *cost]

    rows = [list(_STATS_HEADER), row("(all)", stats.total_requests, stats.failed_requests, stats)]
    rows += [row(name, v.requests, v.failures, v) for name, v in sorted(stats.vendor_stats.items())]
    return "\n".join(
        [
            *table(rows),
            f"cancelled {stats.cancelled_requests}; tokens {stats.prompt_tokens} in, "
            f"{stats.completion_tokens} out; cost ${stats.total_cost_usd:.6f}"
            f"{_unpriced_note(stats.unpriced_calls)}; queue wait "
            f"p50 {stats.p50_queue_wait_ms:.0f} ms, p95 {stats.p95_queue_wait_ms:.0f} ms",
        ]
    )
