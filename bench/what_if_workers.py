"""Our worker with a product change applied in process: what-if measurements, not the product.

The queue benchmarks measure the product as it is. When a target is missed,
the change that would meet it is measured with exactly the same harness by
running one of these apps instead of `workers.app` (`--what-if NAME`):

- `aiohttp`: vendor calls through the `httpx-aiohttp` transport (`HttpxAiohttpClient`,
  same httpx API, same limits and timeouts) instead of httpx's own connection
  pool, in place of `workers.http_transport.vendor_http_client`.
- `no_events`: Celery task events off (`worker_send_task_events` and
  `task_send_sent_event` False); the benchmark turns the producer's sent events
  off too (`NO_EVENTS` below).
- `aiohttp_no_events`: both.

Each name is built on first access (PEP 562 `__getattr__`), so
`celery -A what_if_workers:aiohttp worker ...` patches only what it names,
before the worker builds its runtime.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NO_EVENTS", "VARIANTS"]

VARIANTS = ("aiohttp", "no_events", "aiohttp_no_events")
# The Celery settings `no_events` changes, on the producer's app as on the worker's.
NO_EVENTS = {"worker_send_task_events": False, "task_send_sent_event": False}


def _use_aiohttp_transport() -> None:
    import httpx  # noqa: PLC0415
    from httpx_aiohttp import HttpxAiohttpClient  # noqa: PLC0415

    from dispatcher.vendors.base import http_timeout  # noqa: PLC0415
    from workers import runtime  # noqa: PLC0415
    from workers.http_transport import HTTP_CONNECTIONS_PER_VENDOR  # noqa: PLC0415

    def http_client(config: Any) -> httpx.AsyncClient:
        size = HTTP_CONNECTIONS_PER_VENDOR
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        return HttpxAiohttpClient(timeout=http_timeout(config), limits=limits)

    runtime.vendor_http_client = http_client


def __getattr__(name: str) -> Any:
    if name not in VARIANTS:
        raise AttributeError(name)
    from workers.app import app  # noqa: PLC0415

    if "aiohttp" in name:
        _use_aiohttp_transport()
    if "no_events" in name:
        app.conf.update(NO_EVENTS)
    return app
