"""`submit`, `get`, `wait` and `cancel` without a client: one built from the environment.

The process-wide `Client` is `Client.from_env()`, built on first use and kept;
build a `Client` yourself to choose its settings or share its connections.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from dispatcher.models import JobRecord, Request, Response
from producer.client import DEFAULT_WAIT_TIMEOUT_S, Client

__all__ = ["cancel", "default_client", "get", "submit", "wait"]


class _DefaultClient:
    """The process-wide client behind the module-level helpers, built on first use."""

    def __init__(self) -> None:
        self._client: Client | None = None
        self._lock = threading.Lock()

    def get(self) -> Client:
        with self._lock:
            if self._client is None:
                self._client = Client.from_env()
            return self._client


_DEFAULT = _DefaultClient()


def default_client() -> Client:
    """The client the module-level helpers use: `Client.from_env()`, built once."""
    return _DEFAULT.get()


def submit(request: Request | Mapping[str, Any], *, idempotency_key: str | None = None) -> str:
    """Queue a job with the default client; see `Client.submit`."""
    return default_client().submit(request, idempotency_key=idempotency_key)


def get(job_id: str) -> JobRecord:
    """The job's record, read with the default client; see `Client.get`."""
    return default_client().get(job_id)


def wait(job_id: str, timeout_s: float = DEFAULT_WAIT_TIMEOUT_S) -> Response:
    """Wait for the job with the default client; see `Client.wait`."""
    return default_client().wait(job_id, timeout_s=timeout_s)


def cancel(job_id: str) -> bool:
    """Cancel the job with the default client; see `Client.cancel`."""
    return default_client().cancel(job_id)
