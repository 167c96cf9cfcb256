"""How a client's Redis connection pools are sized and timed.

Both clients (`producer.client`, `producer.async_client`) build their pools from
`redis_pool_options`: enough connections for many blocked waits, a bounded wait
for a free one, and a dead Redis failing in seconds with a clear error.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "REDIS_CONNECT_TIMEOUT_S",
    "REDIS_MAX_CONNECTIONS",
    "REDIS_POOL_WAIT_S",
    "REDIS_SOCKET_TIMEOUT_S",
    "redis_pool_options",
]

# Each blocked `wait` holds a connection for up to one wait slice, so a busy app needs
# more than a handful; past this many, callers queue for a free one (see below).
REDIS_MAX_CONNECTIONS = 256
# How long a caller queues for a free pooled connection before a clear error.
REDIS_POOL_WAIT_S = 10.0
# Must exceed the store's wait slice (`WAIT_SLICE_S`), or every blocked wait would time out.
REDIS_SOCKET_TIMEOUT_S = 5.0
# A dead or unreachable Redis fails in seconds with a clear error, not a hang.
REDIS_CONNECT_TIMEOUT_S = 3.0


def redis_pool_options() -> dict[str, Any]:
    """Options of the (blocking) connection pools of the sync and asyncio clients, as
    redis-py's `BlockingConnectionPool` takes them (`timeout`: the wait for a free one)."""
    return {
        "max_connections": REDIS_MAX_CONNECTIONS,
        "timeout": REDIS_POOL_WAIT_S,
        "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
    }
