"""Prometheus metrics of the HTTP front: requests and latency by route, method and status,
and per tenant its requests, tokens and cost.

A tenant is the name of a configured API key (`none` on a front without keys),
so the tenant label has as many values as there are keys. Tokens and cost are
counted from the chat completions the front answers, whole or streamed (not
from batches, whose results are read as files). Each app keeps its own registry
(tests build several apps in one process); `GET /metrics` on the front exposes
it, beside the workers' exporter.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from dispatcher.models import Usage

__all__ = ["FrontMetrics", "tenant_label"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def tenant_label(tenant: str | None) -> str:
    """The tenant label's value: the tenant, or `none` on a front without keys."""
    return tenant or "none"


class FrontMetrics:
    """The front's counters, and the ASGI middleware that counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "llmdispatch_http_requests_total",
            "Requests the HTTP front answered, by route, method and status.",
            ["route", "method", "status", "tenant"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "llmdispatch_http_tokens_total",
            "Tokens of the chat completions answered, by tenant and kind (prompt, completion).",
            ["tenant", "kind"],
            registry=self.registry,
        )
        self.cost = Counter(
            "llmdispatch_http_cost_usd_total",
            "Cost in USD of the chat completions answered, by tenant.",
            ["tenant"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "llmdispatch_http_request_duration_seconds",
            "Time to the end of each answer (a stream's last byte), by route and method.",
            ["route", "method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )

    def answered(self, tenant: str | None, usage: Usage | None, cost_usd: float | None) -> None:
        """Count what one chat completion answered cost its tenant."""
        label = tenant_label(tenant)
        if usage is not None:
            self.tokens.labels(label, "prompt").inc(usage.prompt_tokens)
            self.tokens.labels(label, "completion").inc(usage.completion_tokens)
        if cost_usd:
            self.cost.labels(label).inc(cost_usd)

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
                tenant = tenant_label((scope.get("state") or {}).get("tenant"))
                self.requests.labels(name, method, str(status), tenant).inc()
                self.latency.labels(name, method).observe(time.perf_counter() - started)

        return counted
