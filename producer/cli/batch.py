"""`llmdispatch batch`: submit a JSONL file as one batch, follow it, fetch its results.

Each command builds its client with the factory the root command puts on the
click context (`producer.cli.root.make_client`), as the job commands do. Following a
batch draws a progress bar on stderr, so stdout keeps only what scripts read:
the batch id, the JSON, or the results.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from dispatcher import BatchRecord
from producer.batch_files import write_results
from producer.cli.exit_codes import EXIT_BATCH_ITEMS_FAILED, EXIT_USAGE, exit_codes, fail
from producer.cli.table import table
from producer.client import Client

__all__ = [
    "batch_app",
    "batch_summary",
    "cancel_command",
    "follow_batch",
    "results_command",
    "retry_failed_command",
    "status_command",
    "submit_command",
    "wait_command",
]

batch_app = typer.Typer(
    help="""Run many requests as one batch: submit a JSONL file, follow it, fetch its results.

Input (`batch submit`): a JSONL file, one request a line, in either shape: an OpenAI
Batch input line `{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
"body": {"model": "...", "messages": [...]}}`, or the request object itself with an
optional "custom_id" (default line-N). Every line is checked before anything is queued.

Output (`batch results`): the OpenAI Batch output format, one line per item in input
order, each with its custom_id and its response or error.

Exit codes: 0 every item succeeded; 7 some items failed or were cancelled;
2 an invalid file (every bad line is listed); 4 no such batch; 5 timed out waiting.""",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, as the root command's (producer.cli.root)
)

FileArg = Annotated[
    Path, typer.Argument(metavar="FILE", help="The JSONL batch file; - reads stdin.")
]
BatchIdArg = Annotated[
    str, typer.Argument(metavar="BATCH_ID", help="The id that batch submit printed.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait", help="Follow the batch to its end with a progress bar on stderr."
    ),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(min=0.0, help="Seconds to wait for the batch (default: until it ends)."),
]
MetaOpt = Annotated[
    list[str] | None,
    typer.Option("--meta", metavar="KEY=VALUE", help="A label kept on the batch; repeat for more."),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="The file to write; - or none: stdout."),
]
PartialOpt = Annotated[
    bool,
    typer.Option(
        "--partial",
        help="Write the results even if the batch has not ended; "
        'items still pending get the error "not_finished".',
    ),
]

# The item counts `batch status` lists, in this order.
_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


def _client(ctx: typer.Context) -> Client:
    """A new client from the factory on the context."""
    make_client: Callable[[], Client] = ctx.obj
    return make_client()


@batch_app.command("submit")
def submit_command(
    ctx: typer.Context,
    file: FileArg,
    *,
    wait: WaitOpt = True,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = None,
    meta: MetaOpt = None,
) -> None:
    """Queue every request of a JSONL FILE as one batch, print its id and follow it.

    The id is printed alone on stdout first (with --no-wait it is all that is printed).
    With --wait (the default) a progress bar on stderr shows items ended, failed, the
    rate and the ETA, then a one-line summary. --json prints JSON on stdout instead:
    the batch's final status, or {"batch_id": ...} with --no-wait.

    Exits 0 when every item succeeded, 7 when some failed or were cancelled, 2 for an
    invalid file (nothing is queued; every bad line is listed), 5 on --timeout.
    """
    metadata = _metadata(meta or [])
    with _readable(file) as path, exit_codes(), _client(ctx) as client:
        batch_id = client.submit_batch(path, metadata=metadata)
        if not as_json:
            typer.echo(batch_id)  # before waiting: a script has it even if the wait fails
        record = follow_batch(client, batch_id, timeout) if wait else None
    if record is None:
        if as_json:
            typer.echo(json.dumps({"batch_id": batch_id}))
        return
    _finish(record, as_json=as_json)


@batch_app.command("status")
def status_command(ctx: typer.Context, batch_id: BatchIdArg, as_json: JsonOpt = False) -> None:
    """Print a batch's items by state, its times, tokens, cost and ETA; exits 4 if none."""
    with exit_codes(), _client(ctx) as client:
        record = client.batch_status(batch_id)
    typer.echo(_record_json(record) if as_json else _record_text(record))


@batch_app.command("wait")
def wait_command(
    ctx: typer.Context,
    batch_id: BatchIdArg,
    timeout: TimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Follow a batch to its end with a progress bar on stderr, then print a summary.

    --json prints the final status on stdout. Exits 0 when every item succeeded,
    7 when some failed or were cancelled, 4 if there is no such batch, 5 on --timeout
    (the batch keeps running).
    """
    with exit_codes(), _client(ctx) as client:
        record = follow_batch(client, batch_id, timeout)
    _finish(record, as_json=as_json)


@batch_app.command("results")
def results_command(
    ctx: typer.Context,
    batch_id: BatchIdArg,
    output: OutputOpt = None,
    partial: PartialOpt = False,
) -> None:
    """Write a batch's results in the OpenAI Batch output format (JSONL), in input order.

    Each line holds the item's custom_id and either its response (a chat.completion
    body) or its error. Refuses (exit 2) a batch with items still pending unless
    --partial is given. Exits 4 if there is no such batch.
    """
    to_file = None if output is None or str(output) == "-" else output
    with exit_codes(), _client(ctx) as client:
        record = client.batch_status(batch_id)
        if not record.done and not partial:
            fail(
                f"error: batch {batch_id} has {record.counts.pending} of "
                f"{record.counts.total} items not finished; wait for it "
                f"(llmdispatch batch wait {batch_id}) or pass --partial",
                EXIT_USAGE,
            )
        items = client.iter_batch_results(batch_id)
        if to_file is None:
            write_results(items, sys.stdout)
            return
        try:
            out = to_file.open("w", encoding="utf-8", newline="\n")
        except OSError as exc:
            fail(f"error: cannot write {to_file}: {exc.strerror}", EXIT_USAGE)
        with out:
            count = write_results(items, out)
    typer.echo(f"wrote {count} results to {to_file}", err=True)


@batch_app.command("cancel")
def cancel_command(ctx: typer.Context, batch_id: BatchIdArg, as_json: JsonOpt = False) -> None:
    """Cancel every item of a batch that has not ended; print how many were.

    Queued items never run; a running item's result is discarded when it comes back.
    A batch that had already ended is left as it is, and how it ended is printed
    (--json: "had_ended": true, with its counts). Exits 0 either way, 4 if there is
    no such batch.
    """
    with exit_codes(), _client(ctx) as client:
        cancelled = client.cancel_batch(batch_id)
        ended = client.batch_status(batch_id) if cancelled == 0 else None
    if ended is not None and not ended.done:
        ended = None  # none cancelled, yet items are pending (retried meanwhile)
    if as_json:
        outcome: dict[str, object] = {"batch_id": batch_id, "cancelled": cancelled}
        outcome["had_ended"] = ended is not None
        if ended is not None:
            outcome["counts"] = ended.counts.model_dump()
            outcome["finished_at"] = ended.finished_at.isoformat() if ended.finished_at else None
        typer.echo(json.dumps(outcome))
    elif ended is not None:
        typer.echo(f"batch {batch_id} had already ended; nothing was cancelled: {_ending(ended)}")
    else:
        typer.echo(f"cancelled {cancelled} {_items(cancelled)} of batch {batch_id}")


@batch_app.command("retry-failed")
def retry_failed_command(
    ctx: typer.Context,
    batch_id: BatchIdArg,
    *,
    wait: WaitOpt = True,
    timeout: TimeoutOpt = None,
) -> None:
    """Resubmit a batch's failed items into the same batch; print how many were.

    Each takes the failed item's place in the results. With --wait (the default) the
    batch is followed as submit follows it, with the same exit codes.
    """
    with exit_codes(), _client(ctx) as client:
        resubmitted = client.retry_failed(batch_id)
        typer.echo(f"resubmitted {resubmitted} failed {_items(resubmitted)} of batch {batch_id}")
        record = follow_batch(client, batch_id, timeout) if wait else None
    if record is not None:
        _finish(record, as_json=False)


def _metadata(pairs: list[str]) -> dict[str, str]:
    """`KEY=VALUE` options as a dict."""
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--meta")
        metadata[key] = value
    return metadata


@contextmanager
def _readable(file: Path) -> Iterator[Path]:
    """The batch file's path; for `-`, a temporary copy of stdin (gone afterwards)."""
    if str(file) == "-":
        with tempfile.TemporaryDirectory(prefix="llmdispatch-batch-") as directory:
            path = Path(directory) / "stdin.jsonl"
            path.write_bytes(sys.stdin.buffer.read())
            yield path
        return
    try:
        file.open("rb").close()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc.strerror}", param_hint="FILE") from None
    yield file


def follow_batch(client: Client, batch_id: str, timeout_s: float | None) -> BatchRecord:
    """Wait for the batch with a live progress bar on stderr, then print a summary there.

    Where stderr is not a terminal, rich draws the bar once, as it stands at the end.
    """
    progress = Progress(
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA {task.fields[eta]}"),
        console=Console(stderr=True),
    )
    with progress:
        task = progress.add_task("batch", total=None, failed=0, rate=_rate(None), eta=_eta(None))

        def show(record: BatchRecord) -> None:
            counts = record.counts
            progress.update(
                task,
                total=counts.total,
                completed=counts.ended,
                failed=counts.failed,
                rate=_rate(record),
                eta=_eta(record.eta_s),
            )

        record = client.wait_batch(batch_id, timeout_s, on_progress=show)
    typer.echo(batch_summary(record), err=True)
    return record


def _finish(record: BatchRecord, *, as_json: bool) -> None:
    """Print the final status with --json; exit 7 unless every item succeeded."""
    if as_json:
        typer.echo(_record_json(record))
    if record.counts.succeeded < record.counts.total:
        raise typer.Exit(EXIT_BATCH_ITEMS_FAILED)


def batch_summary(record: BatchRecord) -> str:
    counts, elapsed_s = record.counts, _elapsed_s(record, record.created_at)
    return (
        f"batch {record.batch_id}: {counts.succeeded} succeeded, {counts.failed} failed, "
        f"{counts.cancelled} cancelled of {counts.total} in {elapsed_s:.1f} s"
    )


def _ending(record: BatchRecord) -> str:
    """How an ended batch ended: its counts, and when."""
    counts = record.counts
    when = f" at {record.finished_at.isoformat()}" if record.finished_at else ""
    return (
        f"{counts.succeeded} succeeded, {counts.failed} failed, "
        f"{counts.cancelled} cancelled of {counts.total}{when}"
    )


def _elapsed_s(record: BatchRecord, since: datetime) -> float:
    """Seconds from `since` to the batch's end, or to now while it runs."""
    until = record.finished_at or datetime.now(UTC)
    return max(0.0, (until - since).total_seconds())


def _rate(record: BatchRecord | None) -> str:
    """Items ended per second since the first one started."""
    if record is None or record.started_at is None or record.counts.ended == 0:
        return "- items/s"
    elapsed_s = _elapsed_s(record, record.started_at)
    return f"{record.counts.ended / elapsed_s:.1f} items/s" if elapsed_s > 0 else "- items/s"


def _eta(eta_s: float | None) -> str:
    if eta_s is None:
        return "-:--:--"
    minutes, seconds = divmod(round(eta_s), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def _items(count: int) -> str:
    return "item" if count == 1 else "items"


def _record_json(record: BatchRecord) -> str:
    """The record as JSON, with the derived counts (ended, pending) and `done` spelled out."""
    data = record.model_dump(mode="json")
    data["counts"] |= {"ended": record.counts.ended, "pending": record.counts.pending}
    data["done"] = record.done
    return json.dumps(data, indent=2)


def _record_text(record: BatchRecord) -> str:
    def moment(at: datetime | None) -> str:
        return at.isoformat() if at is not None else "-"

    counts = record.counts
    lines = [
        f"batch:     {record.batch_id}",
        f"status:    {'done' if record.done else 'running'}, "
        f"{counts.ended} of {counts.total} items ended",
        f"created:   {moment(record.created_at)}",
        f"started:   {moment(record.started_at)}",
        f"finished:  {moment(record.finished_at)}",
    ]
    if record.cancelled_at is not None:
        lines.append(f"cancelled: {moment(record.cancelled_at)}")
    lines += [
        f"tokens:    {record.prompt_tokens} in, {record.completion_tokens} out, "
        f"cost ${record.cost_usd:.6f}",
        f"eta:       {_eta(record.eta_s)}",
    ]
    if record.metadata:
        labels = ", ".join(f"{key}={value}" for key, value in sorted(record.metadata.items()))
        lines.append(f"metadata:  {labels}")
    rows = [["state", "items"], *([state, str(getattr(counts, state))] for state in _STATES)]
    return "\n".join([*lines, *table(rows)])
