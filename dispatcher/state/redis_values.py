"""What the Redis-facing modules share: reading replies, times, and the one blocking wait.

`store`, `batches`, `store_async` and the metrics exporter read the same
kinds of replies (bytes or text, hashes of them, epoch seconds) and wait on
the same kind of done list; this is the one copy of each.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis

__all__ = ["PENDING_TTL_S", "WAIT_SLICE_S", "at", "decoded", "text", "wait_for_entry"]

# A job (or batch) that never ends (its message lost with a wiped Redis) must not
# live forever.
PENDING_TTL_S = 7 * 86_400
# A blocking wait is sliced so that it always returns before the client's socket timeout.
WAIT_SLICE_S = 1.0


def text(value: Any) -> str:
    """A reply as text, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def decoded(mapping: Mapping[Any, Any]) -> dict[str, str]:
    """A hash reply with text keys and values."""
    return {text(k): text(v) for k, v in mapping.items()}


def at(epoch_s: float) -> datetime:
    """Epoch seconds as a timezone-aware UTC datetime."""
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def wait_for_entry(client: redis.Redis, key: str, timeout_s: float) -> bool:
    """Block until the list `key` holds an entry (True) or `timeout_s` passed (False).

    Moving the one entry to the same list leaves it in place, so every waiter
    wakes, and waiters that come later return at once.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bool(client.exists(key))  # a zero timeout still reports an entry
        slice_s = min(remaining, WAIT_SLICE_S)
        # Redis takes fractional seconds here; redis-py's stub says int.
        if client.blmove(key, key, slice_s, "LEFT", "LEFT"):  # type: ignore[arg-type]
            return True
