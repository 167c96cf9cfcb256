"""`llmdispatch demo`: the whole loop on this machine, with nothing running and no API key."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from dispatcher import Settings
from dispatcher.models import StreamEventType
from producer.cli.batch import follow_batch
from producer.cli.exit_codes import EXIT_BATCH_ITEMS_FAILED
from producer.cli.jobs import stats_text
from producer.client import Client

if TYPE_CHECKING:
    from producer.cli.tools.demo import DemoStack

__all__ = ["demo_command"]

# Exit code when the stack could not start (the message says why).
EXIT_START_FAILED = 1
BATCH_TIMEOUT_S = 600.0
STREAM_PROMPT = "Stream me a short reply about resumable streams, one token at a time"

# How often the kept stack's main thread wakes to notice Ctrl-C (see _stay_up).
STAY_UP_POLL_S = 0.5


def demo_command(
    prompts: Annotated[
        int, typer.Option(min=1, max=100_000, help="Prompts in the demo batch.")
    ] = 1_000,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep",
            help="Leave the stack up afterwards (Flower's URL is printed); Ctrl-C stops it.",
        ),
    ] = False,
) -> None:
    """Run the whole loop here: Redis, the mock vendor, a worker and Flower, then a batch.

    Uses the Redis at REDIS_URL when it answers, else starts a private redis-server
    on a free port. Starts the stand-in (mock) vendor, a worker for it and for
    every real vendor whose API key is set, and Flower; submits a batch of
    --prompts prompts with a progress bar, streams one reply token by token, and
    prints the statistics. Every process it started is stopped, and its files
    removed, on exit: Ctrl-C (the way to end --keep) included. Exit code 0 when
    every prompt succeeded or Ctrl-C stopped it, 7 when some prompt failed, 1
    when the stack could not start.
    """
    # The tools load when a command needs them, not with every `llmdispatch` run.
    from producer.cli.tools.demo import DemoStack, DemoStartError  # noqa: PLC0415

    try:
        with (
            DemoStack(announce=lambda line: typer.echo(line, err=True)) as stack,
            Client(Settings.load()) as client,
        ):
            succeeded = _run(client, prompts)
            if keep:
                _stay_up(stack)
    except KeyboardInterrupt:
        # Asked to stop, and stopped: a success (and no "Error 130" from make demo).
        typer.echo("\nstopped: every process the demo started has been stopped", err=True)
        return
    except DemoStartError as exc:
        typer.echo(f"demo: could not start: {exc}", err=True)
        raise typer.Exit(EXIT_START_FAILED) from None
    if not succeeded:
        raise typer.Exit(EXIT_BATCH_ITEMS_FAILED)


def _run(client: Client, prompts: int) -> bool:
    from producer.cli.tools.demo import MOCK_MODEL, demo_prompts  # noqa: PLC0415

    batch_id = client.submit_batch(demo_prompts(prompts))
    typer.echo(f"submitted batch {batch_id}: {prompts} prompts for {MOCK_MODEL}")
    record = follow_batch(client, batch_id, BATCH_TIMEOUT_S)
    first = next(iter(client.iter_batch_results(batch_id)))
    reply = first.response.content if first.response else f"error: {first.error}"
    typer.echo(f"first result, {first.custom_id}: {reply}")
    typer.echo("streaming one reply: ", nl=False)
    request = {"model": MOCK_MODEL, "messages": [{"role": "user", "content": STREAM_PROMPT}]}
    for event in client.send_streaming(request):
        if event.type is StreamEventType.CHUNK and event.delta:
            typer.echo(event.delta, nl=False)
    typer.echo("")
    typer.echo(stats_text(client.stats()))
    return record.counts.succeeded == record.counts.total


def _stay_up(stack: DemoStack) -> None:
    typer.echo(
        f"\nthe stack is up; Flower: {stack.flower_url} "
        f"(user:password {stack.flower_auth}); REDIS_URL={stack.redis_url} "
        f"LLMDISPATCH_KEY_PREFIX=llmd-demo LLMDISPATCH_CONFIG={stack.env['LLMDISPATCH_CONFIG']}"
        "\nCtrl-C stops it",
    )
    # Not signal.pause(): a process-directed SIGINT may be delivered to another of this
    # process's threads, and pause() then never returns. A short sleep lets the main
    # thread run the pending KeyboardInterrupt within half a second either way.
    while True:
        time.sleep(STAY_UP_POLL_S)
