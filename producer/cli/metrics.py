"""`llmdispatch metrics`: serve the dispatcher's figures to Prometheus over HTTP.

The exporter keeps nothing: each scrape reads Redis (see `producer.cli.tools.metrics`),
so it may run anywhere Redis is reachable, any number of times.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry, start_http_server

from producer.cli.exit_codes import EXIT_UNAVAILABLE, exit_codes, fail
from producer.client import Client

__all__ = ["DEFAULT_METRICS_ADDRESS", "DEFAULT_METRICS_PORT", "metrics_command"]

# OpenTelemetry's Prometheus exporter port: clear of Flower (5555) and the mock server (8900).
DEFAULT_METRICS_PORT = 9464
# Loopback by default: the figures name vendors, limits and spend.
DEFAULT_METRICS_ADDRESS = "127.0.0.1"


def metrics_command(
    ctx: typer.Context,
    *,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on; 0 picks a free one.")
    ] = DEFAULT_METRICS_PORT,
    address: Annotated[str, typer.Option(help="Interface to listen on.")] = DEFAULT_METRICS_ADDRESS,
) -> None:
    """Serve Prometheus metrics at http://ADDRESS:PORT/metrics until Ctrl-C or SIGTERM.

    Every scrape reads Redis: queue depth, jobs in flight, jobs by outcome,
    latency and queue-wait histograms, tokens, cost, rate-limit headroom,
    circuit states and health.
    """
    # The tools load when a command needs them, not with every `llmdispatch` run.
    from producer.cli.tools.metrics import DispatcherCollector  # noqa: PLC0415

    make_client: Callable[[], Client] = ctx.obj
    with exit_codes(), make_client() as client:
        registry = CollectorRegistry()
        registry.register(DispatcherCollector.from_client(client))
        try:
            server, thread = start_http_server(port, addr=address, registry=registry)
        except OSError as exc:
            fail(f"error: cannot listen on {address}:{port}: {exc}", EXIT_UNAVAILABLE)
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            typer.echo(
                f"serving metrics on http://{address}:{server.server_port}/metrics; Ctrl-C stops it"
            )
            stop.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
