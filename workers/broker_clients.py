"""One redis-py client per kombu channel, instead of a new one for every command.

kombu's Redis transport (5.x) builds a fresh `redis.Redis` for every publish,
acknowledgement and event it sends (`Channel._create_client`), on the channel's
one connection pool. redis-py 8's `Redis.__init__` fills a table of response
callbacks each time: profiled in our worker (bench/RESULTS.md) it was 13 % of
the process's CPU, more than our whole job store. A `redis.Redis` is
thread-safe and holds no connection of its own (it checks one out of the pool
per command), so one per channel and pool does the same work.

`reuse_redis_clients()` patches that one method, once per process; the cached
client is rebuilt whenever the channel's pool changes (kombu replaces it after
a connection error). The worker applies it as its Celery app is built.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["reuse_redis_clients"]

_lock = threading.Lock()
_patched = False
_CACHE_ATTRIBUTE = "_llmd_sync_client"


def reuse_redis_clients() -> bool:
    """Make kombu's Redis channels reuse one sync client; False if it already does."""
    global _patched  # noqa: PLW0603 - a process-wide patch is applied once
    with _lock:
        if _patched:
            return False
        from kombu.transport import redis as kombu_redis  # noqa: PLC0415 - only when asked

        original: Any = kombu_redis.Channel._create_client

        def create_client(self: Any, asynchronous: bool = False) -> Any:
            if asynchronous:
                return original(self, asynchronous)
            pool = self.pool
            cached = self.__dict__.get(_CACHE_ATTRIBUTE)
            if cached is None or cached.connection_pool is not pool:
                cached = original(self, False)
                self.__dict__[_CACHE_ATTRIBUTE] = cached
            return cached

        create_client.__wrapped__ = original  # type: ignore[attr-defined]
        kombu_redis.Channel._create_client = create_client  # type: ignore[method-assign]
        _patched = True
        return True
