"""The exit codes of `llmdispatch`, how the library's errors map onto them, and
`load_settings`, which exits 3 on an invalid configuration.

Exit codes scripts can rely on:

    0  success (for `cancel`: the job was cancelled, or had already ended)
    1  the job failed or was cancelled, or could not be routed (no vendor, over budget)
    2  bad usage: unknown option, missing prompt, an invalid request or batch file
    3  invalid configuration (including a `worker --vendors` name it does not define,
       no vendor enabled, or a key a vendor refuses: `config check --ping`, `health check`)
    4  no such job, batch or vendor (never existed, expired, not a job or batch id,
       or not a configured vendor's name)
    5  timed out waiting for the job or batch (it keeps running)
    6  Redis or the broker could not be reached (or a probed vendor: `health check`)
    7  the batch ended, but some of its items failed or were cancelled
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import redis
import typer

from dispatcher import (
    ConfigError,
    DispatcherError,
    InvalidRequest,
    JobNotFound,
    Settings,
    StoreUnavailable,
    VendorNotFound,
)
from dispatcher.redaction import redact

__all__ = [
    "EXIT_BATCH_ITEMS_FAILED",
    "EXIT_CONFIG_INVALID",
    "EXIT_JOB_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "exit_codes",
    "fail",
    "load_settings",
]

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG_INVALID = 3
EXIT_NOT_FOUND = 4
EXIT_TIMEOUT = 5
EXIT_UNAVAILABLE = 6
EXIT_BATCH_ITEMS_FAILED = 7

# Library errors and the exit code each means; the first match wins, so specific ones lead.
_EXIT_CODES: tuple[tuple[type[Exception], int], ...] = (
    (ConfigError, EXIT_CONFIG_INVALID),
    (InvalidRequest, EXIT_USAGE),
    (JobNotFound, EXIT_NOT_FOUND),
    (VendorNotFound, EXIT_NOT_FOUND),
    (TimeoutError, EXIT_TIMEOUT),
    (StoreUnavailable, EXIT_UNAVAILABLE),
    (DispatcherError, EXIT_JOB_FAILED),
    (redis.ConnectionError, EXIT_UNAVAILABLE),
    (redis.TimeoutError, EXIT_UNAVAILABLE),
)


def fail(message: str, code: int) -> NoReturn:
    """Print `message` on stderr and exit with `code`."""
    typer.echo(message, err=True)
    # `from None`: when called while handling an error, the exit does not carry it along.
    raise typer.Exit(code) from None


@contextmanager
def exit_codes() -> Iterator[None]:
    """Report the library's errors on stderr and exit with the documented code."""
    try:
        yield
    except Exception as exc:
        # Imported only here: kombu comes with Celery, which most commands never load.
        from kombu.exceptions import OperationalError  # noqa: PLC0415

        codes: list[tuple[type[Exception], int]] = [
            *_EXIT_CODES,
            (OperationalError, EXIT_UNAVAILABLE),
        ]
        code = next((code for kind, code in codes if isinstance(exc, kind)), None)
        if code is None:
            raise
        hint = " (is REDIS_URL right, and is Redis running?)" if code == EXIT_UNAVAILABLE else ""
        fail(f"error: {redact(str(exc))}{hint}", code)


def load_settings() -> Settings:
    """`Settings.load()`; if the configuration is invalid, every problem on stderr and exit 3."""
    try:
        return Settings.load()
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG_INVALID)
