"""`llmdispatch serve`: the OpenAI-compatible HTTP front (`producer.http_api`)."""

from __future__ import annotations

from typing import Annotated

import typer

from producer.cli.exit_codes import exit_codes

__all__ = ["serve_command"]


def serve_command(
    *,
    host: Annotated[
        str, typer.Option(help="Interface to listen on; beyond loopback only with API keys.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes serving the port (uvicorn workers).")
    ] = 1,
) -> None:
    """Serve OpenAI's Chat Completions, Files and Batches APIs over the job queue.

    Any OpenAI SDK reaches it with base_url http://HOST:PORT/v1 and one of the
    configured API keys (server.api_keys, LLMDISPATCH_SERVER_API_KEYS). Also
    /healthz, /readyz, /metrics and the OpenAPI docs at /docs.
    """
    from producer.http_api.serving import serve  # noqa: PLC0415

    with exit_codes():
        serve(host, port, workers=workers)
