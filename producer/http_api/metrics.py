"""Prometheus metrics of the HTTP front: requests and latency by route, method and status.

Each app keeps its own registry (tests build several apps in one process);
`GET /metrics` on the front exposes it, beside the workers' exporter.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["FrontMetrics"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class FrontMetrics:
    """The front's counters, and the ASGI middleware that counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "llmdispatch_http_requests_total",
            "Requests the HTTP front answered, by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "llmdispatch_http_request_duration_seconds",
            "Time to the end of each answer (a stream's last byte), by route and method.",
            ["route", "method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)

    def middleware(self, app: Any) -> Any:
        """`app` with every HTTP answer counted."""

        async def counted(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = 500

            async def watched(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await app(scope, receive, watched)
            finally:
                route = scope.get("route")
                name = getattr(route, "path", None) or "unmatched"
                method = scope.get("method", "")
                self.requests.labels(name, method, str(status)).inc()
                self.latency.labels(name, method).observe(time.perf_counter() - started)

        return counted
