"""Bare Celery tasks, the baselines of the queue benchmarks: a no-op, and one httpx POST.

None of the dispatcher runs in these tasks: no job store, no router, no runner.
A worker for them is started like ours, from the repository root with `bench/`
on PYTHONPATH:

    REDIS_URL=redis://127.0.0.1:6379/0 BARE_CELERY_SETTINGS=defaults \\
        python -m celery -A bare_celery worker -Q bare --pool threads -c 8

`BARE_CELERY_SETTINGS` picks the Celery configuration:

- `defaults`: Celery's own defaults (early acknowledgement, prefetch 4, no task
  events); only the broker is set.
- `dispatcher`: the very dict `dispatcher.broker.celery_config.celery_settings` gives
  our producer and workers (late acknowledgement, prefetch 1, task events on,
  frequent unacked sweeps), built from the same environment and config file.

How the benchmark knows the tasks ran without adding a Redis round trip to each:
a task counts itself in process, and a daemon thread writes the counts and the
time of the last completion to the Redis key `DONE_KEY` whenever they changed
(at most every `PUBLISH_INTERVAL_S`).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import httpx
import redis
from celery import Celery

__all__ = [
    "DONE_KEY",
    "HTTP_TASK",
    "NOOP_TASK",
    "QUEUE",
    "SETTINGS_ENV",
    "app",
    "make_app",
    "read_done",
]

QUEUE = "bare"
NOOP_TASK = "bare.noop"
HTTP_TASK = "bare.http"
DONE_KEY = "bench:bare:done"
SETTINGS_ENV = "BARE_CELERY_SETTINGS"
HTTP_TIMEOUT_S = 60.0
PUBLISH_INTERVAL_S = 0.01
SETTINGS_MODES = ("defaults", "dispatcher")


def make_app(mode: str, broker_url: str, *, current: bool = False) -> Celery:
    """A Celery app on `broker_url` with the settings `mode` names (see the module doc)."""
    if mode not in SETTINGS_MODES:
        raise ValueError(f"{SETTINGS_ENV} must be one of {SETTINGS_MODES}, not {mode!r}")
    celery_app = Celery("bare", set_as_current=current)
    if mode == "dispatcher":
        from dispatcher import Settings  # noqa: PLC0415 - only this mode needs the config
        from dispatcher.broker.celery_config import celery_settings  # noqa: PLC0415

        celery_app.conf.update(celery_settings(Settings.load()))
    celery_app.conf.update(broker_url=broker_url, worker_hijack_root_logger=False)
    return celery_app


def read_done(client: redis.Redis) -> tuple[int, int, float]:
    """(succeeded, failed, time of the last completion) as the worker last published them."""
    raw = client.get(DONE_KEY)
    if raw is None:
        return 0, 0, 0.0
    ok, failed, last = (raw.decode() if isinstance(raw, bytes) else str(raw)).split()
    return int(ok), int(failed), float(last)


class _Counter:
    """Counts finished tasks; a daemon thread publishes the counts to Redis."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.last = 0.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def done(self, ok: bool) -> None:
        now = time.time()
        with self._lock:
            if ok:
                self.ok += 1
            else:
                self.failed += 1
            self.last = now
            if self._thread is None:
                self._thread = threading.Thread(target=self._publish, name="bare-done", daemon=True)
                self._thread.start()

    def _publish(self) -> None:
        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        published = None
        while True:
            with self._lock:
                state = (self.ok, self.failed, self.last)
            if state != published:
                client.set(DONE_KEY, f"{state[0]} {state[1]} {state[2]!r}")
                published = state
            time.sleep(PUBLISH_INTERVAL_S)


_counter = _Counter()
_local = threading.local()


def _http_client() -> httpx.Client:
    """This task thread's own client: one keep-alive connection, reused by its calls.

    Not one client shared by every thread: at 600 threads the shared sync pool
    failed calls with "Bad file descriptor" (a pool race between threads, as in
    httpcore issue #1110), and one pool per thread also has no lock to fight over.
    """
    client: httpx.Client | None = getattr(_local, "client", None)
    if client is None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        client = _local.client = httpx.Client(timeout=HTTP_TIMEOUT_S, limits=limits)
    return client


app = make_app(
    os.environ.get(SETTINGS_ENV, "defaults"),
    os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    current=True,
)


@app.task(name=NOOP_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def noop() -> None:
    """Nothing at all, then counted."""
    _counter.done(True)


@app.task(name=HTTP_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def http_call(url: str, body: dict[str, Any], api_key: str) -> None:
    """One synchronous POST of a chat completion, its JSON body read, then counted."""
    ok = False
    try:
        response = _http_client().post(
            url, json=body, headers={"Authorization": f"Bearer {api_key}"}
        )
        ok = response.status_code == 200 and bool(response.json()["choices"])
    finally:
        _counter.done(ok)
