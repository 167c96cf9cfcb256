"""What a route reads from the app it runs in: the settings, the client, the metrics,
the caller's tenant and the front's store of files and batch records."""

from __future__ import annotations

from fastapi import Request as HttpRequest

from dispatcher.config.settings import Settings
from dispatcher.state.keys import Keys
from dispatcher.state.redis_values import PENDING_TTL_S
from producer.async_client import AsyncClient
from producer.http_api.auth import caller_of
from producer.http_api.front_store import FrontStore
from producer.http_api.metrics import FrontMetrics

__all__ = ["client_of", "metrics_of", "settings_of", "store_of", "tenant_of"]


def settings_of(request: HttpRequest) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def client_of(request: HttpRequest) -> AsyncClient:
    client: AsyncClient = request.app.state.client
    return client


def metrics_of(request: HttpRequest) -> FrontMetrics:
    metrics: FrontMetrics = request.app.state.metrics
    return metrics


def tenant_of(request: HttpRequest) -> str | None:
    """The caller's tenant (None on a front without keys); raises NotAuthenticated."""
    return caller_of(request, settings_of(request).server).tenant


def store_of(request: HttpRequest) -> FrontStore:
    """The front's files and batch records, over the app's Redis client."""
    settings = settings_of(request)
    return FrontStore(
        client_of(request).redis,
        Keys(settings.key_prefix),
        file_ttl_s=settings.server.file_ttl_s,
        # A batch lives up to the pending TTL unfinished, then the job TTL once it ends.
        batch_ttl_s=PENDING_TTL_S + settings.job_ttl_s,
    )
