"""`llmdispatch mock-server`: the stand-in vendor (every wire format) with latency and faults."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

__all__ = ["mock_server"]


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
            min=0.0, max=1.0, help="Share of completions that fail (requests without x-fake-fault)."
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
            help="Key callers must send, their vendor's way (401 otherwise); default: no auth.",
            show_default=False,
        ),
    ] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every request (slows the server).")
    ] = False,
) -> None:
    """Serve a stand-in LLM vendor for tests, demos and load tests, in every vendor's format.

    Point an OpenAI or OpenAI-compatible vendor's base_url at the printed URL
    (http://HOST:PORT/v1), any other vendor's at http://HOST:PORT: Anthropic,
    Azure, Gemini, Ollama and Cohere answer on their own paths. Replies are
    "echo: " plus the last user message, streamed one word per chunk; usage
    counts words. Per request, the x-fake-fault header (or a [fault:... tag]
    marker in the prompt) injects a fault: a status such as 429 or 500, quota,
    retry-after:<s>, slow:<ms>, stall:<ms>, timeout, midstream-drop,
    midstream-error or echo-headers (comma-separated to combine; a trailing @N
    limits it to the first N requests). Runs until Ctrl-C or SIGTERM.
    """
    # Imported here so that other commands do not pay for importing aiohttp.
    from producer.cli.tools.standin import StandInOptions, run  # noqa: PLC0415

    kinds = [kind.strip() for kind in failure_kinds.split(",") if kind.strip()]
    try:
        options = StandInOptions.model_validate(
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
